"""``python -m vibecode_cli`` = ``vibecode``."""

import sys

from vibecode_cli import main

sys.exit(main())
