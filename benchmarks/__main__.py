"""`python -m benchmarks ...` measures; `python -m benchmarks compare OLD NEW` compares."""

import sys

from benchmarks.cli import console

sys.exit(console())
