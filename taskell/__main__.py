"""``python -m taskell``: the same as the ``taskell`` command."""

import sys

from .cli import main

sys.exit(main())
