"""The report files parse back to the harness's numbers; the Markdown table and the
paired lines state them."""

import csv

import jax
import numpy as np

from fastxai_jax.evaluation import (
    CURVES,
    Protocol,
    evaluate_methods,
    markdown_table,
    protocol_from_dict,
    read_results,
    write_results,
)


def test_report_files_parse_back_to_the_same_numbers(tiny_eval, tmp_path):
    apply_fn, params, x, masks = tiny_eval
    protocol = Protocol(step_size=32, normalisation="half")
    summary, curves = evaluate_methods(
        apply_fn, params, x, masks, ["saliency", "random"], key=jax.random.key(1),
        protocol=protocol, progress=False,
    )  # fmt: skip
    write_results(tmp_path, summary, curves, {"model": "tiny", "num": 4, "protocol": protocol})
    saved = read_results(tmp_path)
    assert protocol_from_dict(saved["config"]["protocol"]) == protocol
    for method, row in summary.items():
        for name, value in row.items():
            assert saved["methods"][method][name] == value, (method, name)
        for kind in CURVES:
            assert saved["curves"][method][kind]["mean"] == curves[method][kind]["mean"]
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [row["method"] for row in rows] == ["saliency", "random"]
    for row in rows:
        assert "per_input" not in row
        for name in ("insertion_auc", "deletion_auc", "iou", "time_per_input_s"):
            assert float(row[name]) == summary[row["method"]][name]
        assert int(row["forward_passes"]) == summary[row["method"]]["forward_passes"]
    for kind in CURVES:
        assert (tmp_path / f"{kind}.png").read_bytes()[:4] == b"\x89PNG"


def test_markdown_table_states_the_rounded_numbers():
    row = {
        "insertion_auc": 0.96149, "deletion_auc": 0.1474, "patch_deletion_auc": 0.16851,
        "pointing_game": 1.0, "iou": 0.4666, "relevance_mass": 0.5, "time_per_input_s": 0.0017,
        "forward_passes": 0, "backward_passes": 0,
    }  # fmt: skip
    lines = markdown_table({"fex": row})
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert cells == ["fex", "0.961", "0.147", "nan", "0.169", "1.000", "0.467", "0.500",
                     "1.70", "0", "0"]  # fmt: skip
    assert len(lines[0].split("|")) == len(lines[2].split("|"))
    assert np.isnan(float(cells[3]))
