"""Command lines: `latr-train` (train_ppo_ray)."""
