"""The rules the fold and the reads share, pure (no I/O, no clock): message state, deadlines,
instance health, and the rows a batch produces."""
