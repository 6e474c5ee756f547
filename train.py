"""Erase a concept: `python train.py` runs configs/toy/advanchor.yaml (erase "circle" from the toy model).

Any other config: `python train.py --config configs/sd14/van_gogh.yaml`; overrides use dotted keys,
e.g. `--model.concepts='[star]'`; `--print_config` shows the resolved configuration.
"""

from pathlib import Path

from advanchor.cli import main

if __name__ == "__main__":
    main(default_config=Path(__file__).resolve().parent / "configs" / "toy" / "advanchor.yaml")
