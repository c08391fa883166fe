"""Image files from disk as ``[N, H, W, 3]`` float32 in [0, 1]."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np


def load_images(
    paths: Sequence[str], size: int, *, flag: str = "paths"
) -> tuple[np.ndarray, list[str]]:
    """Reads image files, resized (anti-aliased) to ``size x size``.

    Grey images are repeated to three channels; an alpha channel is dropped;
    8-bit values are scaled to [0, 1].

    Args:
      paths: image files (anything ``skimage.io.imread`` reads).
      size: output side in pixels (positive).
      flag: how errors name ``paths`` (the CLI passes ``--images``).

    Returns:
      ``(images [N, size, size, 3] float32 in [0, 1], names)``, the names being
      the files' stems.

    Raises:
      FileNotFoundError: a path is not a file.
      ValueError: a file is not an image, ``paths`` is empty or ``size`` < 1.
    """
    from skimage import io, transform

    if isinstance(paths, str) or not len(paths):
        raise ValueError(f"{flag} must be a non-empty list of files; got {paths!r}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int; got {size!r}")
    images, names = [], []
    for name in paths:
        path = pathlib.Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"{flag}: no such file {name}")
        try:
            image = np.asarray(io.imread(path), np.float32)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"{flag}: cannot read {name} as an image ({type(err).__name__})"
            ) from None
        if image.max() > 1.0:
            image = image / 255.0
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        image = image[..., :3]
        images.append(transform.resize(image, (size, size, 3), anti_aliasing=True))
        names.append(path.stem)
    return np.stack(images).astype(np.float32), names
