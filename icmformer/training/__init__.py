"""Training: loss, config schema, iterative click sampling and the trainer."""
