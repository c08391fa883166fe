"""``fastxai models``: list the target models and the weight layouts they load."""

from __future__ import annotations

import argparse
import json

from fastxai_jax.models.zoo import MODEL_ZOO


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "models", help="list target models, their input sizes and convertible weight layouts"
    )
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.set_defaults(func=run)
    return parser


def format_table() -> str:
    """The model table as aligned text."""
    header = ("name", "family", "input", "weights from", "description")
    rows = [header] + [
        (name, info.family, info.input_size, ", ".join(info.layouts), info.description)
        for name, info in MODEL_ZOO.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join(cells + [row[-1]]))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.json:
        table = {
            name: {
                "description": info.description,
                "layouts": list(info.layouts),
                "input_size": info.input_size,
                "family": info.family,
            }
            for name, info in MODEL_ZOO.items()
        }
        print(json.dumps(table, indent=1))
    else:
        print(format_table())
    return 0
