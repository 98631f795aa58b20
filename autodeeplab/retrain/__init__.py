"""The retrain stage: a decoded genotype trained from scratch (loop, config, Hydra CLI)."""
