"""Tasks with verifiable rewards: countdown and math. Rewards never raise and are time-bounded."""
