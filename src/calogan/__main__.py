"""``python -m calogan`` runs the command line."""

import sys

from calogan.cli import main

if __name__ == "__main__":
    sys.exit(main())
