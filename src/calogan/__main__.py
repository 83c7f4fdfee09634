"""``python -m calogan`` runs the command line."""

import sys

from calogan.cli import main

sys.exit(main())
