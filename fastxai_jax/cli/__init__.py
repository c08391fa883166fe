"""``fastxai`` command line: thin verbs over the library.

Each verb lives in its own module ``fastxai_jax/cli/<verb>.py`` defining
``add_parser(subparsers)`` (which registers the verb and sets
``func=run`` as default) and ``run(args) -> int``.

:func:`main` turns every expected error (bad arguments, missing or unwritable
paths, unreadable files, a diverged training run) into ONE line on stderr and
exit code 2, without a traceback.
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


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (sub-parsers inherit it)."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


# Errors a user can cause with arguments or files; anything else is a bug and keeps
# its traceback. OSError covers missing / read-only / non-directory paths and
# unreadable images (PIL's UnidentifiedImageError is an OSError).
EXPECTED_ERRORS = (ValueError, OSError, FloatingPointError)


def _one_line(message: object) -> str:
    return " ".join(str(message).split()) or "(no message)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    """Runs ``fastxai VERB ...``; returns the exit code (2 for any expected error)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EXPECTED_ERRORS as err:
        message = _one_line(err)
        if isinstance(err, FloatingPointError):  # fit's NaN guard, from any training verb
            kind = "" if message.startswith("training diverged") else "training diverged: "
        else:
            kind = "" if isinstance(err, ValueError) else f"{type(err).__name__}: "
        print(f"fastxai {args.verb}: error: {kind}{message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
