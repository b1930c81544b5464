"""``python -m wantbuild``: the same as the ``wantbuild`` command."""

import sys

from wantbuild._cli import main

if __name__ == "__main__":
    sys.exit(main())
