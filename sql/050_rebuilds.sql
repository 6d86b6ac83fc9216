-- When each rebuild swapped its fresh read models in, and at which log position: the
-- console's projector page shows the last one. Written in the swap transaction.
CREATE TABLE rebuilds (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    finished_at timestamptz NOT NULL DEFAULT now(),
    position    bigint      NOT NULL
);
