"""Start the demo app: `python -m advanchor.demo [--model toy] [--eraser PATH ...] [--report report.html]`.

Open the URL it prints. The app runs offline: no share link, no analytics, no fonts from the web.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ArgumentParser, reported
from ..models import model_source


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m advanchor.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="toy", help='base model: "toy" (default), a diffusers directory or hub id')
    parser.add_argument(
        "--eraser",
        action="append",
        default=[],
        metavar="PATH",
        help="an erasure artifact to prefill (repeatable): a run folder, its lora/ directory or a unet_delta file",
    )
    parser.add_argument("--report", type=Path, default=None, help="a benchmark's report.html for the report tab")
    parser.add_argument("--prompt", default=None, help='the prompt to prefill (toy model: "a red circle")')
    parser.add_argument(
        "--generate-at-start", action="store_true", help="compare once at start: the page opens with the images"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if there is one, else cpu)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    args = parser.parse_args(argv)
    with reported(args.debug):
        model_source(args.model)  # a mistyped model fails now, not at the first click
        from ..stack import resolve
        from .app import build_app, launch

        for path in args.eraser:
            resolve(path)
        app = build_app(args.model, args.eraser, args.report, args.prompt, args.device, args.generate_at_start)
        launch(app, args.host, args.port)


if __name__ == "__main__":
    main()
