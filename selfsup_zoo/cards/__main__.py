"""``python -m selfsup_zoo.cards``: see :func:`selfsup_zoo.cards.cli.main`."""

import sys

from .cli import main

sys.exit(main())
