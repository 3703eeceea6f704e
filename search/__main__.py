"""``python -m search --index INDEX "a red car drifting" [-k 10]`` (search/cli.py)."""

import sys

from search.cli import main

if __name__ == "__main__":
    sys.exit(main())
