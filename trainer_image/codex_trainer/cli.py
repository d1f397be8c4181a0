"""``codex-train``: run (in-cluster), local (laptop, no cluster) and prepare-embedded."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _prepare_embedded(args: argparse.Namespace) -> int:
    from .embedded import prepare_all

    for name, path in prepare_all(args.models_dir).items():
        print(json.dumps({"event": "embedded.ready", "model": name, "dir": str(path)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codex-train", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare-embedded", help="materialise the embedded models (image build time)")
    prepare.add_argument("--models-dir", type=Path, default=None,
                         help="target directory (default: /opt/codex/models if writable, else the user cache)")
    prepare.set_defaults(func=_prepare_embedded)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
