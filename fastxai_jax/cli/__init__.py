"""``fastxai`` command line: thin verbs over the library.

Each verb lives in its own module ``fastxai_jax/cli/<verb>.py`` defining
``add_parser(subparsers)`` (which registers the verb and sets
``func=run`` as default) and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_VERBS = (
    "models",
    "train_target",
    "train_explainer",
    "explain",
    "evaluate",
    "demo",
    "sweep",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastxai", description="Fast explanations of neural-network predictions in JAX."
    )
    subparsers = parser.add_subparsers(dest="verb", required=True)
    for verb in _VERBS:
        try:
            module = importlib.import_module(f"fastxai_jax.cli.{verb}")
        except ModuleNotFoundError as err:  # a verb not written yet
            if err.name != f"fastxai_jax.cli.{verb}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"fastxai {args.verb}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
