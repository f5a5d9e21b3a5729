"""The training-run registry: every training run, what it used and what it produced."""
