"""``python -m lorarffi.cli`` (what ``torchrun -m lorarffi.cli train ...`` needs) runs ``lora-rffi``."""

import sys

from lorarffi.cli import main

sys.exit(main())
