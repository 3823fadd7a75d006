"""``python -m gendiff ...`` runs the ``gendiff`` command (what ``accelerate launch -m gendiff ...`` starts per process)."""

import sys

from gendiff.cli import main

sys.exit(main())
