"""Erase a concept: `python train.py` runs configs/toy/advanchor.yaml (erase "circle" from the toy model).

`--method NAME` picks another erasure method (with configs/toy/NAME.yaml as its defaults, when it exists).
Any other config: `python train.py --config configs/sd14/style.yaml`; overrides use dotted keys,
e.g. `--model.concepts='[star]'`; `--print_config` shows the resolved configuration.
"""

from pathlib import Path

from advanchor.cli import main

if __name__ == "__main__":
    main(default_configs=Path(__file__).resolve().parent / "configs" / "toy")
