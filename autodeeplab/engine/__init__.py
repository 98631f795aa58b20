"""Training and evaluation engine: metrics, loops and checkpointing."""
