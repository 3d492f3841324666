"""`python -m benchmarks ...` measures; `python -m benchmarks compare OLD NEW` compares."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "compare":
    from benchmarks import compare

    sys.exit(compare.main(compare.parse_args(sys.argv[2:])))

from benchmarks import cli

sys.exit(cli.main(cli.parse_args(sys.argv[1:])))
