"""`python -m bench.load --profile NAME`: one command for a whole load run (see bench/README.md)."""

from __future__ import annotations

import sys

from bench.load.cli import main

if __name__ == "__main__":
    sys.exit(main())
