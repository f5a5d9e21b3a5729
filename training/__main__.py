"""`python -m training <model> [flags]` trains; `python -m training evaluate <model>` evaluates.

`python -m training fetch [<model>]` only fetches (and verifies) the data.
"""

from __future__ import annotations

import argparse
import json
import sys

from app.config import get_settings
from training.catalog import MODELS
from training.sources import SourceError, fetch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for spec in MODELS.values():
        sub = commands.add_parser(spec.name, help=spec.summary)
        sub.add_argument("--seed", type=int, default=42)
        sub.add_argument("--resume", action="store_true", help="Continue the interrupted run.")
        sub.add_argument("--quiet", action="store_true", help="One line per epoch, no progress bar.")
        spec.add_arguments(sub)
    evaluate = commands.add_parser("evaluate", help="Evaluate the served version; JSON on the last line.")
    evaluate.add_argument("model", choices=sorted(MODELS))
    evaluate.add_argument("--version", type=int, default=None)
    fetch_parser = commands.add_parser("fetch", help="Fetch and verify the datasets of models.")
    fetch_parser.add_argument("model", nargs="*", choices=sorted(MODELS))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    try:
        if args.command == "evaluate":
            metrics = MODELS[args.model].evaluate(settings, args.version)
            print(json.dumps(metrics, sort_keys=True))
        elif args.command == "fetch":
            for name in args.model or sorted(MODELS):
                for source in MODELS[name].sources:
                    print(f"{source.name}: {fetch(source, settings.DATA_DIR)}")
        else:
            MODELS[args.command].train(args, settings)
    except SourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
