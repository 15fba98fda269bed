"""``python -m tgp.bench``: see :mod:`tgp.bench`."""

import sys

from tgp.bench import main

if __name__ == "__main__":
    main()
    sys.exit(0)
