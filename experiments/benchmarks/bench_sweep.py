"""Sweep throughput (images/s) over 1, 2, 4 and 8 simulated CPU devices.

A correctness run of the sharded path, not a speed claim: simulated devices
share the machine's cores. Each device count runs in its own process
(``--xla_force_host_platform_device_count``) the same sweep (small CNN on the
embedded benchmark, saliency and IG + insertion/deletion); the steady-state
rate is timed between the first and the last shard written (compile excluded),
and every run's merged table must equal the 1-device one to 1e-5.

    python experiments/benchmarks/bench_sweep.py [--num-images 128] [--image-size 32]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, sys, time
from fastxai_jax import sweep
from fastxai_jax.sweep import store
stamps = []
_write = store.write_shard
def timed(output_dir, model, method, shard, attributions, rows):
    _write(output_dir, model, method, shard, attributions, rows)
    stamps.append((time.perf_counter(), len(rows)))
store.write_shard = timed
from fastxai_jax.sweep import runner
runner.store.write_shard = timed
config = json.loads(sys.argv[1])
result = sweep.run(config, progress=False)
# Per method: images after its first shard over the time since that shard.
print(json.dumps({"stamps": stamps, "seconds": result["seconds"]}))
"""


def _config(output_dir: str, num_images: int, image_size: int, shard_size: int) -> dict:
    return {
        "name": "bench",
        "models": [{"name": "small_cnn", "num_classes": 8, "weights": "random:0",
                    "options": {"widths": [16, 32]}, "label": "cnn"}],
        "data": {"source": "groundtruth", "split": "eval", "num_images": num_images,
                 "image_size": image_size},
        "methods": [{"name": "saliency"}, {"name": "ig", "options": {"num_steps": 16}}],
        "metrics": [{"name": "insertion_deletion", "options": {"step_size": 4 * image_size}}],
        "shard_size": shard_size,
        "output_dir": output_dir,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--devices", default="1,2,4,8")
    args = parser.parse_args()
    results, tables = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in [int(c) for c in args.devices.split(",")]:
            out = os.path.join(tmp, f"d{count}")
            config = _config(out, args.num_images, args.image_size, args.shard_size)
            env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}",
                   "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}  # fmt: skip
            done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(config)], env=env,
                                  capture_output=True, text=True, check=True)  # fmt: skip
            report = json.loads(done.stdout.strip().splitlines()[-1])
            shards_per_method = -(-args.num_images // args.shard_size)
            rates = []
            for m in range(len(config["methods"])):
                stamps = report["stamps"][m * shards_per_method : (m + 1) * shards_per_method]
                images = sum(n for _, n in stamps[1:])
                rates.append(images / (stamps[-1][0] - stamps[0][0]))
            with open(os.path.join(out, "results.csv")) as handle:
                tables[count] = list(csv.DictReader(handle))
            row = {"devices": count, "saliency_img_s": rates[0], "ig_img_s": rates[1],
                   "total_s_incl_compile": report["seconds"]}  # fmt: skip
            results.append(row)
            print(json.dumps(row), flush=True)
    base = tables[min(tables)]
    for count, table in tables.items():
        for a, b in zip(base, table, strict=True):
            for column in ("insertion_auc", "deletion_auc"):
                assert abs(float(a[column]) - float(b[column])) <= 1e-5, (count, a, b)
    print(f"tables equal to {min(tables)} device(s) within 1e-5: {sorted(tables)}")


if __name__ == "__main__":
    main()
