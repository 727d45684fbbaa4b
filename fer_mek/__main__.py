"""``python -m fer_mek ...``: the same as the ``fer-mek`` command (:func:`fer_mek_cli.command.main`)."""

import sys

from fer_mek_cli.command import main

if __name__ == "__main__":
    sys.exit(main())
