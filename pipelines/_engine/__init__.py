"""The engine (private): the driver's loop, batches and tasks, keys and fingerprints, recovery, workers."""
