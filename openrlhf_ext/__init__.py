"""OpenRLHF integration of LATR rollouts (training side). See ARCHITECTURE.md."""
