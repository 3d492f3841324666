import sys

from train.cli import main, parse_args

if __name__ == "__main__":
    sys.exit(main(parse_args()))
