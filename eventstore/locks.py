"""Every PostgreSQL advisory-lock key acklog takes, in one place (Commanded's habit).

Keys are 64-bit integers in one namespace per database; each names what it serializes.
``APPEND`` is also written in ``sql/001_events.sql`` (the statement trigger takes it); a test
checks that the two agree.
"""

from __future__ import annotations

#: Transaction lock taken by the events table's BEFORE INSERT statement trigger: appends
#: draw positions one transaction at a time, so readers never skip an event (invariant 3).
APPEND = 7312004711
#: Session lock held while migrations run: one migrator at a time.
MIGRATE = 7312004712
#: Session lock of the live projector's leader: one projector at a time, standbys wait.
PROJECTOR_LEADER = 7312004721
#: Transaction lock shared by live read-model writers (projector batches, rebuild swap).
READ_MODEL_WRITE = 7312004722
#: Session lock: one rebuild or verify at a time.
REBUILD = 7312004723
