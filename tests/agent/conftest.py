"""The agent tests share their helpers through modules next to them (``waits``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tests are not a package (--import-mode=importlib)
