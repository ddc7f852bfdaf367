"""``python -m lorarffi`` runs the ``lora-rffi`` command line."""

import sys

from lorarffi.rffi.cli import main

sys.exit(main())
