"""``python -m torchstn ...``: the command line of the experiments."""

import sys

try:
    from torchstn.experiments.cli import main
except ImportError as e:  # pragma: no cover - depends on the environment
    sys.exit(f"torchstn: the command line needs the experiments extra "
             f"(pip install 'torchstn[experiments]'): {e}")

if __name__ == "__main__":
    sys.exit(main())
