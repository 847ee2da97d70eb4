"""``python -m urnet_core.cli`` (used by torchrun)."""

import sys

from urnet_core.cli import main

sys.exit(main())
