"""Helpers shared by the reference scripts (``fex_refs``, ``ltx_refs``, ``tve_refs``).

Imported as ``_common`` from the scripts' own folder (run as
``python experiments/parity/<name>_refs.py REPO``); no author code in here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

# The tiny HF ViT that the FEX and LTX references build (image, patch, width, classes).
IMG, PATCH, HIDDEN, NUM_CLASSES = 16, 4, 16, 5


def tiny_vit_config(initializer_range: float):
    """A one-layer, two-head HF ``ViTConfig`` of :data:`IMG`/:data:`PATCH`/:data:`HIDDEN`."""
    from transformers import ViTConfig

    return ViTConfig(
        initializer_range=initializer_range,
        image_size=IMG,
        patch_size=PATCH,
        num_channels=3,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=NUM_CLASSES,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def state_arrays(module: torch.nn.Module, prefix: str) -> dict[str, np.ndarray]:
    """``module.state_dict()`` as numpy copies, keys prefixed with ``prefix``."""
    return {f"{prefix}{k}": v.detach().numpy().copy() for k, v in module.state_dict().items()}


def parse_args(argv, doc: str, repo_help: str) -> argparse.Namespace:
    """``REPO [--out DIR]`` (default ``tests/fixtures/parity``, created)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("repo", type=Path, help=repo_help)
    p.add_argument("--out", type=Path, default=Path("tests/fixtures/parity"))
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    return a
