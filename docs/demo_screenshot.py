"""Capture a screenshot of the demo app with headless Chromium (Debian: `apt-get install chromium`).

It starts the app on the toy model with the given erasers, compares once at start so that the page opens
with both images, and saves the page as a PNG. docs/demo.png was made with an AdvAnchor run that erased
"circle" from the toy model (`python -m advanchor.benchmark`'s cell for circle, seed 0):

    python docs/demo_screenshot.py --eraser outputs/benchmark-attack2/cells/advanchor/circle/seed0
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
from pathlib import Path

from advanchor.demo.app import build_app, launch
from advanchor.errors import ArgumentParser, reported


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eraser", action="append", default=[], metavar="PATH", help="eraser to load (repeatable)")
    parser.add_argument("--prompt", default="a red circle")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("demo.png"))
    parser.add_argument("--size", default="1400,860", help="browser window width,height")
    parser.add_argument("--chromium", default="chromium", help="the Chromium executable")
    args = parser.parse_args(argv)
    with reported(args.debug):
        chromium = shutil.which(args.chromium)
        if chromium is None:
            raise FileNotFoundError(f"{args.chromium!r} is not on PATH; install it (apt-get install chromium)")
        app = build_app("toy", args.eraser, prompt=args.prompt, device="cpu", generate_at_start=True)
    url = launch(app, port=free_port(), block=False)
    try:
        # The page opens with its outputs filled; virtual time only has to run its scripts, which it does at
        # once instead of in wall-clock time.
        command = [chromium, "--headless", "--no-sandbox", "--hide-scrollbars", f"--window-size={args.size}"]
        command += ["--virtual-time-budget=10000", f"--screenshot={args.out.resolve()}", url]
        subprocess.run(command, check=True, timeout=300, capture_output=True)
    finally:
        app.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
