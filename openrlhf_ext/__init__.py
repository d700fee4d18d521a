"""OpenRLHF integration of LATR rollouts (training side). See docs/ARCHITECTURE.md."""
