import sys

from ldmkit.cli import main

sys.exit(main())
