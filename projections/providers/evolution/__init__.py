"""Evolution API (EvolutionAPI/evolution-api): a package rather than one module, for its size.

Its decoder alone is ~580 lines (two major versions, the Baileys and the Cloud API channels);
with its simulator it would reach the ~700 lines a provider module keeps under, so the two
live side by side: ``decode.py`` (the decoder; its docstring documents the format) and
``simulate.py`` (the bodies ``acklog simulate`` posts). Everything else acklog needs of
Evolution is here, in ``PROVIDER`` (docs/adding-a-provider.md).
"""

from __future__ import annotations

from projections.providers.base import FailureTable, Provider
from projections.providers.evolution.decode import decode
from projections.providers.evolution.simulate import Simulator

#: a status ERROR names no reason: Evolution failures are classified by their text alone
FAILURES = FailureTable(
    {},
    {},
    (),
    (
        "EvolutionAPI/evolution-api src/api/integrations/channel/whatsapp/"
        "whatsapp.baileys.service.ts: status ERROR carries no reason",
    ),
)

PROVIDER = Provider(name="evolution", decode=decode, failures=FAILURES, simulator=Simulator)
