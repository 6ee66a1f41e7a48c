"""``python -m pi``: the same as the ``lightshow`` command."""
import sys

from pi.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
