"""``python -m ldmkit …`` is the ``ldmkit`` command (``torchrun … -m ldmkit train …`` works too)."""

import sys

from ldmkit.cli import main

sys.exit(main())
