"""`python -m advanchor.standin OUT`: write the SD 1.4 stand-in (random weights, real tokenizer) to OUT."""

from __future__ import annotations

import time

from ..errors import ArgumentParser, reported
from .pipeline import write_standin


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m advanchor.standin", description=__doc__)
    parser.add_argument("out", help="folder to write (a diffusers pipeline, about 4.3 GB in fp32)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    start = time.time()
    with reported(args.debug):
        out = write_standin(args.out, overwrite=args.overwrite, seed=args.seed)
    print(f"wrote {out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
