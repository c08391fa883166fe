"""Evaluation as a library: a :class:`Protocol`, the harness and its reports (SPEC §7).

::

    from fastxai_jax import evaluation
    protocol = evaluation.Protocol(normalisation="half")
    summary, curves = evaluation.evaluate_methods(
        apply_fn, params, images, masks, ["saliency", "random"], key=key, protocol=protocol
    )
    evaluation.write_results("runs/eval", summary, curves, {"protocol": protocol})
"""

from fastxai_jax.evaluation._learned import train_explainer, trainable_methods
from fastxai_jax.evaluation.protocol import PatchProtocol, Protocol, protocol_from_dict
from fastxai_jax.evaluation.report import (
    markdown_table,
    overlay_grid,
    paired_lines,
    read_results,
    write_results,
)
from fastxai_jax.evaluation.run import CURVES, evaluate_methods, score_batch, to_pixels

evaluate = evaluate_methods

__all__ = [
    "CURVES",
    "PatchProtocol",
    "Protocol",
    "evaluate",
    "evaluate_methods",
    "markdown_table",
    "overlay_grid",
    "paired_lines",
    "protocol_from_dict",
    "read_results",
    "score_batch",
    "to_pixels",
    "train_explainer",
    "trainable_methods",
    "write_results",
]
