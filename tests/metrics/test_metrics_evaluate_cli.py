"""``fastxai evaluate``: argument parsing into the library's Protocol, its files and
the CLI's error path (the harness itself: tests/evaluation/)."""

import csv

import numpy as np
import pytest

from fastxai_jax.cli import main
from fastxai_jax.core import Substrate
from fastxai_jax.evaluation import Protocol, protocol_from_dict, read_results


@pytest.mark.slow  # ~16 s CPU (the small CNN's metrics compile), ~50 s on a shared machine
def test_evaluate_cli_writes_the_library_results(tmp_path, capsys):
    argv = ["evaluate", "--model", "small_cnn", "--untrained", "--num", "3", "--image-size",
            "24", "--batch-size", "2", "--methods", "random", "--step-size", "32",
            "--deletion-substrate", "zeros_normalised", "--iou-threshold", "0.5",
            "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    saved = read_results(tmp_path)
    protocol = protocol_from_dict(saved["config"]["protocol"])
    assert protocol == Protocol(
        step_size=32, deletion_substrate=Substrate("family_mean"), normalisation="half",
        iou_threshold=0.5,
    )  # fmt: skip
    row = saved["methods"]["random"]
    assert len(row["per_input"]["deletion_auc"]) == 3
    assert row["deletion_auc"] == np.mean(row["per_input"]["deletion_auc"])
    assert (row["forward_passes"], row["backward_passes"]) == (0, 0)
    (csv_row,) = csv.DictReader(open(tmp_path / "results.csv"))
    assert float(csv_row["insertion_auc"]) == row["insertion_auc"]
    assert f"ins {row['insertion_auc']:.4f}" in capsys.readouterr().out


def test_evaluate_cli_refuses_bad_arguments(capsys):
    assert main(["evaluate", "--model", "vgg16", "--out", "unused", "--num", "2"]) == 2
    assert "--untrained" in capsys.readouterr().err
    argv = ["evaluate", "--untrained", "--out", "unused", "--num", "2", "--image-size", "24"]
    assert main([*argv, "--deletion-substrate", "grey"]) == 2
    assert "deletion_substrate" in capsys.readouterr().err
    assert main([*argv, "--options", "[1]"]) == 2
    assert "--options" in capsys.readouterr().err
