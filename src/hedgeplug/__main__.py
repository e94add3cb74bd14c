"""`python -m hedgeplug` runs the command (used to start child nodes with this interpreter)."""

import sys

from hedgeplug.cli import main

sys.exit(main())
