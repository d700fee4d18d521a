"""`python -m latr_sglang ...` is `latr-sglang ...`."""

import sys

from latr_sglang.cli import main

if __name__ == "__main__":
    sys.exit(main())
