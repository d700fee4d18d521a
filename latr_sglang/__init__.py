"""latr-sglang: Lookahead Tree-Based Rollouts (LATR) over SGLang and a torch reference engine."""

__version__ = "0.1.0"
