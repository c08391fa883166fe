"""``fastxai sweep CONFIG``: run or resume a sweep (see :func:`fastxai_jax.sweep.run`)."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="explain and score methods x models x data shards on every device; resumable",
        description=(
            "Runs the sweep CONFIG (a .py file or a module of fastxai_jax.configs defining "
            "get_config(); 'CONFIG:ARG' passes ARG). Rerunning skips finished shards. "
            "Several processes join through jax.distributed (--distributed, or "
            "--coordinator/--num-processes/--process-id, or $JAX_COORDINATOR_ADDRESS)."
        ),
    )
    parser.add_argument("config", help="config .py path or module name, e.g. sweep_groundtruth")
    parser.add_argument("--output-dir", help="override the config's output_dir")
    parser.add_argument(
        "--distributed", action="store_true", help="jax.distributed.initialize() (auto-detect)"
    )
    parser.add_argument("--coordinator", help="host:port of process 0 (local multi-process)")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fastxai_jax import sweep

    config = sweep.load_config(args.config)
    if args.output_dir:
        config["output_dir"] = args.output_dir
    result = sweep.run(
        config,
        distributed=True if args.distributed else None,
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        progress=not args.no_progress,
    )
    summary = {k: v for k, v in result.items() if k != "table"}
    print(json.dumps(summary))
    return 0
