"""``python -m torchstn ...`` and the ``torchstn`` command: the experiments' command line.

The library installs without the experiments; this entry point then says what to
install instead of failing with a traceback.
"""

from __future__ import annotations

import sys

# The packages the `experiments` extra brings (import names).
_EXTRA = {"safetensors", "matplotlib", "tqdm", "tomli_w", "tomli"}


def main(argv: list[str] | None = None) -> int:
    try:
        from torchstn.experiments.cli import main as cli_main
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in _EXTRA:
            raise
        print(f"torchstn: the command line needs the experiments extra: pip install "
              f"'torchstn[experiments]' ({e.name} is missing)", file=sys.stderr)
        return 1
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
