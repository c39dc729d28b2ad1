"""Write configs/table1/<distortion>-<model>.toml: the runs `torchstn reproduce table1` makes.

Usage: python scripts/write_table1_configs.py   (tests/experiments/test_config.py checks they agree)
"""

from pathlib import Path

from torchstn.experiments.config import config_to_toml
from torchstn.experiments.reports.reproduce import TABLE1_CELLS, table1_base

HEADER = """# Table 1, {model} on {upper} (seed 0): what `torchstn reproduce table1` runs.
# torchstn train --config configs/table1/{name}.toml --out runs/{name}
# The recipe was chosen on a validation split: docs/experiments/recipe.md. Left out, so
# they follow the other keys: task.st_downsample (for rts and tc), train.channels_last
# (with the precision auto picks) and schedule.lr_milestones (unused by onecycle).

"""


def main() -> None:
    folder = Path(__file__).resolve().parents[1] / "configs" / "table1"
    folder.mkdir(parents=True, exist_ok=True)
    for distortion, model in TABLE1_CELLS:
        name = f"{distortion}-{model}"
        text = HEADER.format(model=model, upper=distortion.upper(), name=name)
        cfg = table1_base(distortion=distortion, model=model, seed=0)
        (folder / f"{name}.toml").write_text(text + config_to_toml(cfg))
    print(f"wrote {len(TABLE1_CELLS)} configs to {folder}")


if __name__ == "__main__":
    main()
