"""``python -m fer_mek ...``: the same as the ``fer-mek`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
