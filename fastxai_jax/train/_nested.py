"""Any pytree as a nested dict of host arrays keyed by its leaves' key paths, and back.

The storage format of :mod:`fastxai_jax.train.checkpoint`: leaves stored by path
(``params/Conv_0/kernel``, ``opt_state/0/mu/...``) let any pytree round-trip
(NamedTuples, optax states with empty nodes, typed PRNG keys) given a template of
the same structure; a SHA-256 digest per array (dtype, shape, bytes) detects
bytes changed on disk.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

import jax
import numpy as np


def _digest(array: Any) -> str:
    arr = np.ascontiguousarray(np.asarray(array))
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def digests(nested: Any, prefix: str = "") -> dict[str, str]:
    """``{"a/b/leaf": sha256}`` over a nested dict of host arrays."""
    if isinstance(nested, dict):
        out: dict[str, str] = {}
        for name, value in nested.items():
            out.update(digests(value, f"{prefix}{name}/"))
        return out
    return {prefix[:-1]: _digest(nested)}


def verify(nested: Any, saved: dict[str, str] | None, where: pathlib.Path) -> None:
    """Raises ``ValueError`` naming ``where`` if ``nested`` differs from its saved digests."""
    if saved is None:  # written before digests were stored
        return
    found = digests(nested)
    if set(found) != set(saved):
        missing = sorted(set(saved) ^ set(found))[:3]
        raise ValueError(f"checkpoint file {where} is corrupt: arrays {missing} missing or extra")
    for name, digest in saved.items():
        if found[name] != digest:
            raise ValueError(
                f"checkpoint file {where} is corrupt: array {name!r} does not match the "
                f"SHA-256 checksum stored when it was saved"
            )


def _key_name(entry: Any) -> str:
    if isinstance(entry, jax.tree_util.DictKey):
        return str(entry.key)
    if isinstance(entry, jax.tree_util.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return entry.name
    if isinstance(entry, jax.tree_util.FlattenedIndexKey):
        return str(entry.key)
    return str(entry)


def _path_names(path: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(_key_name(p) for p in path)


def _is_prng_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_host(x: Any) -> np.ndarray:
    if _is_prng_key(x):
        x = jax.random.key_data(x)
    return np.asarray(jax.device_get(x))


def to_nested(tree: Any) -> dict[str, Any]:
    """Nested dict of host arrays keyed by each leaf's key path."""
    nested: dict[str, Any] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = _path_names(path) or ("_leaf",)
        node = nested
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = _to_host(leaf)
    return nested


def _lookup(nested: Any, names: tuple[str, ...]) -> Any:
    node = nested
    for name in names:
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
    return node


def _leaf_shape(like: Any) -> tuple[int, ...]:
    """Shape of a template leaf (array, ShapeDtypeStruct, scalar); keys as their raw data."""
    if _is_prng_key(like):
        return tuple(jax.random.key_data(like).shape)
    if isinstance(like, jax.ShapeDtypeStruct) and jax.dtypes.issubdtype(
        like.dtype, jax.dtypes.prng_key
    ):
        return tuple(jax.eval_shape(jax.random.key_data, like).shape)
    return tuple(getattr(like, "shape", np.shape(like)))


def _count_leaves(nested: Any) -> int:
    if isinstance(nested, dict):
        return sum(_count_leaves(v) for v in nested.values())
    return 1


def from_nested(nested: dict[str, Any], template: Any, where: str) -> Any:
    """Rebuilds ``template``'s structure from ``nested``, checking keys and shapes."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, like in flat:
        names = _path_names(path) or ("_leaf",)
        key = "/".join(names)
        found = _lookup(nested, names)
        if found is None or isinstance(found, dict):
            raise ValueError(
                f"checkpoint {where} does not match the template: key {key!r} "
                f"(expected shape {_leaf_shape(like)}) is missing"
            )
        expected = _leaf_shape(like)
        if tuple(np.shape(found)) != expected:
            raise ValueError(
                f"checkpoint {where} does not match the template: key {key!r} has shape "
                f"{tuple(np.shape(found))} in the checkpoint, expected {expected}"
            )
        if _is_prng_key(like):
            leaves.append(
                jax.random.wrap_key_data(np.asarray(found), impl=jax.random.key_impl(like))
            )
        elif hasattr(like, "dtype"):
            leaves.append(np.asarray(found).astype(like.dtype))
        elif isinstance(like, bool | int | float):
            leaves.append(type(like)(np.asarray(found)))
        else:
            leaves.append(np.asarray(found))
    saved = _count_leaves(nested)
    if saved != len(flat):
        raise ValueError(
            f"checkpoint {where} does not match the template: it holds {saved} arrays, "
            f"the template {len(flat)}"
        )
    return jax.tree_util.tree_unflatten(treedef, leaves)
