-- How many shards the live projection is folded in (docs/design.md, "Projection shards"):
-- one row. Shard k of n keeps the checkpoint `messages.k/n` (`messages` when n = 1), so
-- shard projectors started with another n than recorded would fold from nothing into
-- models already folded: they refuse, and `acklog rebuild --shards N` changes it (the
-- rebuild's swap writes the new n and every new shard's checkpoint in one transaction).
-- Existing deployments folded with one projector: 1.
CREATE TABLE projector_shards (
    one         boolean     PRIMARY KEY DEFAULT true CHECK (one),
    shards      integer     NOT NULL CHECK (shards BETWEEN 1 AND 64),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO projector_shards (shards) VALUES (1);
