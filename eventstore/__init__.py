"""The append-only event log: append (group commit), gap-safe reads, wake-ups, checkpoints,
migrations. Knows nothing of providers or HTTP."""
