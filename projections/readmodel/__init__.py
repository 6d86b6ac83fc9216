"""The read model: sole owner of every ``rm.*`` table (and of its rebuild copies).

- :mod:`.columns`  the columns of every table, once; SELECT lists and upserts come from it
- :mod:`.codecs`   the jsonb codecs (milestones, failures)
- :mod:`.rows`     the row Structs the fold produces
- :mod:`.deadlines` missed-ack bookkeeping and the one "overdue" rule (Python and SQL)
- :mod:`.load`     what the projector reads back before folding a batch
- :mod:`.write`    what it writes (in the transaction that advances its checkpoint)
- :mod:`.query`    everything the query API and the metrics snapshot read
- :mod:`.schema`   schema-level work of rebuild and verify (create, swap, drop, compare)

Nothing outside this package writes SQL on ``rm.*`` (``tests/projections/readmodel/test_readmodel.py`` greps).
"""

from __future__ import annotations

import re

#: The live schema; a rebuild builds ``rm_build_*`` aside and swaps it in.
LIVE = "rm"
#: The live projector's checkpoint: how far the live read model has folded the log.
LIVE_CHECKPOINT = "messages"
_SCHEMA = re.compile(r"^rm(_[a-z0-9_]{1,50})?$")


def schema_name(schema: str) -> str:
    """Schema names are interpolated into SQL, so only our own shapes are accepted."""
    if not _SCHEMA.match(schema):
        raise ValueError(f"not a read-model schema name: {schema!r}")
    return schema
