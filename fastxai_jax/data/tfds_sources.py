"""Random-access dataset splits via ``tfds.data_source`` (ArrayRecord; no TensorFlow).

``load_split(name, split, data_dir=...)`` returns a ``Sequence``-like source
(``len(source)``, ``source[i]`` -> dict of numpy values) over an already
prepared TFDS dataset. Nothing is downloaded: preparing the files (``tfds
build <name> --file_format=array_record``) needs TensorFlow and is done once
elsewhere; reading them needs only ``array_record`` and PIL.

Known datasets (``DATASETS``): ``imagenet2012`` (manual download),
``imagenette``, ``cifar10``, ``voc`` (``voc/2007``; also ``voc/2012``) and
``sst2`` (``glue/sst2``).
"""

from __future__ import annotations

import importlib
import os
import pathlib
from typing import Any, NamedTuple

__all__ = ["DATASETS", "DatasetSpec", "load_split", "resolve_name", "default_data_dir"]


class DatasetSpec(NamedTuple):
    """How to read one dataset.

    Attributes:
      tfds_name: the TFDS builder name (with config), e.g. ``"voc/2007"``.
      kind: ``"image"``, ``"detection"`` (image + ``objects/bbox``) or ``"text"``.
      num_classes: number of labels.
      label_key: the example's label field (``None`` for detection).
      input_key: the example's image or text field.
      manual: files must be downloaded by hand (ImageNet).
      module: TFDS module to import so that the builder is registered
        (TFDS skips some modules when TensorFlow is absent).
    """

    tfds_name: str
    kind: str
    num_classes: int
    label_key: str | None
    input_key: str
    manual: bool = False
    module: str | None = None


DATASETS: dict[str, DatasetSpec] = {
    "imagenet2012": DatasetSpec("imagenet2012", "image", 1000, "label", "image", manual=True),
    "imagenette": DatasetSpec("imagenette", "image", 10, "label", "image"),
    "cifar10": DatasetSpec("cifar10", "image", 10, "label", "image"),
    "voc": DatasetSpec("voc/2007", "detection", 20, None, "image"),
    "voc/2007": DatasetSpec("voc/2007", "detection", 20, None, "image"),
    "voc/2012": DatasetSpec("voc/2012", "detection", 20, None, "image"),
    "sst2": DatasetSpec(
        "glue/sst2", "text", 2, "label", "sentence", module="tensorflow_datasets.text.glue"
    ),
    "glue/sst2": DatasetSpec(
        "glue/sst2", "text", 2, "label", "sentence", module="tensorflow_datasets.text.glue"
    ),
}

_IMAGENET_HELP = (
    "ImageNet (imagenet2012) is not downloadable automatically. Put "
    "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in {manual}, build it once "
    "(with TensorFlow installed) by `tfds build imagenet2012 --data_dir={data_dir} "
    "--manual_dir={manual} --file_format=array_record`, then pass data_dir={data_dir}"
)


def default_data_dir() -> pathlib.Path:
    """``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets`` (TFDS's default)."""
    return pathlib.Path(
        os.environ.get("TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets"))
    ).expanduser()


def resolve_name(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; ValueError listing the known names."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset name {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name]


def _is_prepared(root: pathlib.Path, tfds_name: str) -> bool:
    return any((root / tfds_name).glob("*/dataset_info.json"))


def _open(tfds_name: str, split: str, data_dir: str | os.PathLike | None) -> Any:
    """``tfds.data_source`` without downloading; missing files -> FileNotFoundError."""
    import tensorflow_datasets as tfds

    where = default_data_dir() if data_dir is None else pathlib.Path(data_dir)
    missing = FileNotFoundError(
        f"dataset {tfds_name!r} (split {split!r}) is not prepared under {where}; build it "
        f"once with `tfds build {tfds_name} --data_dir={where} --file_format=array_record`"
    )
    try:
        return tfds.data_source(
            tfds_name,
            split=split,
            data_dir=None if data_dir is None else os.fspath(data_dir),
            download=False,
        )
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as err:
        raise missing from err
    except NotImplementedError as err:  # TFDS' message for "no random-access files here"
        if not _is_prepared(where, tfds_name):
            raise missing from err
        raise ValueError(
            f"dataset {tfds_name!r} under {where} is not in a random-access format; rebuild it "
            f"with --file_format=array_record ({err})"
        ) from err
    except ValueError as err:
        if "split" in str(err).lower():
            raise ValueError(f"split {split!r} of {tfds_name!r}: {err}") from err
        raise


def load_split(name: str, split: str, *, data_dir: str | os.PathLike | None = None) -> Any:
    """A random-access source over one split of a prepared dataset.

    Args:
      name: a key of :data:`DATASETS` (e.g. ``"imagenette"``, ``"voc"``, ``"sst2"``).
      split: a TFDS split string, e.g. ``"train"``, ``"validation[:500]"``.
      data_dir: the TFDS data directory (default: ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``); required in practice for ``imagenet2012``.

    Returns:
      A source with ``len(source)`` and ``source[i] -> dict`` of numpy values
      (images ``uint8 [H, W, 3]``, labels ints, text ``str``/``bytes``).

    Raises:
      ValueError: unknown ``name`` or bad ``split``.
      FileNotFoundError: the dataset is not prepared under ``data_dir`` (for
        ImageNet, naming where the manual-download archives must go).
    """
    spec = resolve_name(name)
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string such as 'train'; got {split!r}")
    if spec.module is not None:
        importlib.import_module(spec.module)  # registers the builder (TFDS skips it without TF)
    if spec.manual:
        root = default_data_dir() if data_dir is None else pathlib.Path(data_dir)
        prepared = root / spec.tfds_name
        if not prepared.is_dir() or not any(prepared.iterdir()):
            manual = root / "downloads" / "manual"
            raise FileNotFoundError(
                f"no prepared {spec.tfds_name} under {prepared}. "
                + _IMAGENET_HELP.format(manual=manual, data_dir=root)
            )
    return _open(spec.tfds_name, split, data_dir)
