"""``python -m sklearn_cae demo``: run the BreastMNIST demo."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sklearn_cae")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="cross-validate the methods on BreastMNIST")
    demo.add_argument("--dataset", default="breastmnist", help="MedMNIST 2-D data set")
    demo.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        try:
            run_demo(args.dataset, n_splits=args.folds)
        except (FileNotFoundError, ImportError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
