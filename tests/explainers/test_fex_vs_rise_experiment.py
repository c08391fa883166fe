"""experiments/fex_vs_rise.py on a tiny run directory: the report's bookkeeping."""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from fastxai_jax.data.groundtruth import CLASS_NAMES, make_benchmark
from fastxai_jax.explainers.learned import fex_benchmark as fex_train
from fastxai_jax.models import make_apply_fn
from fastxai_jax.train import target as target_lib
from fastxai_jax.train.checkpoint import save_params

_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "fex_vs_rise.py"


def test_fex_vs_rise_reports_paired_means_and_the_black_image_probability(tmp_path, key):
    spec = importlib.util.spec_from_file_location("fex_vs_rise", _SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    config = target_lib._config(0)
    module, family, _ = target_lib._build(config)
    variables = module.init(key, jnp.zeros((1, 64, 64, 3)))
    save_params(tmp_path / "run" / "target" / "params", variables, {"config": config})
    apply_fn = make_apply_fn(module, family)
    train = make_benchmark(8, seed=1)["images"]
    fex_config = fex_train.benchmark_config(
        len(CLASS_NAMES), target_family=family, hidden_size=16, depth=1, mlp_dim=32
    )
    fex_train.train_fex_on_benchmark(
        apply_fn, variables, train, steps=1, batch_size=4, key=key,
        workdir=tmp_path / "run" / "fex", config=fex_config, progress=False,
    )  # fmt: skip
    out = tmp_path / "report.json"
    result = script.main(
        ["--run-dir", str(tmp_path / "run"), "--num-images", "4", "--rise-masks", "16",
         "--out", str(out)]
    )  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    by_class = result["deletion_by_class"]
    assert sum(row["n"] for row in by_class.values()) == 4
    black = jax.nn.softmax(apply_fn(variables, jnp.zeros((1, 64, 64, 3))), -1)[0]
    for name, row in by_class.items():
        assert row["black_image_probability"] == float(black[CLASS_NAMES.index(name)])
    for metric, row in result["metrics"].items():
        low, high = (float(v) for v in row["fex_minus_rise"].split("[")[1].split("]")[0].split(","))
        assert low - 1e-3 <= row["fex"] - row["rise"] <= high + 1e-3, metric
        assert 0.0 <= row["random"] <= 1.0
    assert np.isfinite([row["median_fex_minus_rise"] for row in result["metrics"].values()]).all()
