"""Training: state, steps, loop, periodic actions, checkpoints, summaries, distribution."""
