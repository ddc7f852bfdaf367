"""``python -m lorarffi`` runs the ``lora-rffi`` command line."""

import sys

from lorarffi.cli import main

sys.exit(main())
