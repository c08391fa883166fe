"""How an evaluation scores attributions: one validated :class:`Protocol` (SPEC §7).

The defaults are RISE's pixel protocol (Petsiuk et al., 2018): insertion onto a
blurred copy, deletion to black, 224 pixels a step, the probability of the
explained class. ``patch`` adds a second insertion/deletion protocol scored as
``patch_*_auc``, e.g. the FEX paper's (Gupta et al., 2022): 8×8 patches, 10
steps, masked patches set to 0 in the target's normalised space.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from fastxai_jax.substrate import Substrate, as_substrate

GRANULARITIES = ("pixel", "patch", "grid")
SCORES = ("prob", "top1")


def _positive_or_none(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or None; got {value!r}")
    return int(value)


def _substrate(name: str, value: Any) -> Substrate:
    try:
        return as_substrate(value)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


class _PatchFields(NamedTuple):
    patch_size: int
    num_steps: int
    substrate: Substrate


class PatchProtocol(_PatchFields):
    """A second, patch-level insertion/deletion protocol (scores ``patch_*_auc``).

    Attributes:
      patch_size: patch side in pixels.
      num_steps: curve steps.
      substrate: what both insertion and deletion start from / end at.
    """

    __slots__ = ()

    def __new__(
        cls, patch_size: int = 8, num_steps: int = 10, substrate: Any = "zeros_normalised"
    ) -> PatchProtocol:
        if _positive_or_none("patch_size", patch_size) is None:
            raise ValueError("patch_size must be a positive int; got None")
        if _positive_or_none("num_steps", num_steps) is None:
            raise ValueError("num_steps must be a positive int; got None")
        return super().__new__(cls, patch_size, num_steps, _substrate("substrate", substrate))


class _ProtocolFields(NamedTuple):
    granularity: str = "pixel"
    patch_size: int | None = None
    num_steps: int | None = None
    step_size: int | None = None
    insertion_substrate: Any = "blur"
    deletion_substrate: Any = "zeros"
    normalisation: str | None = None
    score: str = "prob"
    iou_threshold: str | float = "mean"
    patch: PatchProtocol | dict[str, Any] | None = None


class Protocol(_ProtocolFields):
    """What the harness scores and how (every field validated on construction).

    Attributes:
      granularity: ``"pixel"``, ``"patch"`` or ``"grid"`` ranking of the curves (a
        grid-shaped attribution is always ranked on its grid).
      patch_size: patch side for ``"patch"``.
      num_steps: curve steps (``None``: the metric's default).
      step_size: features per step for pixel curves (``None``: 224, RISE's).
      insertion_substrate: what insertion starts from (a :class:`Substrate` or name).
      deletion_substrate: what deleted features become.
      normalisation: the target's family (blur padding, ``family_mean`` substrates).
      score: ``"prob"`` (probability of the explained class) or ``"top1"``.
      iou_threshold: ``"mean"`` or a float in ``[0, 1]``.
      patch: an optional :class:`PatchProtocol` (the FEX paper's protocol).
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Protocol:
        # The fields and their defaults are _ProtocolFields'; substrates are
        # normalised to Substrate and ``patch`` to a PatchProtocol.
        fields = _ProtocolFields(*args, **kwargs)
        if fields.granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity must be one of {GRANULARITIES}; got {fields.granularity!r}"
            )
        if fields.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}; got {fields.score!r}")
        threshold = fields.iou_threshold
        if threshold != "mean":
            if isinstance(threshold, bool) or not isinstance(threshold, int | float):
                raise ValueError(f'iou_threshold must be "mean" or a float; got {threshold!r}')
            if not 0.0 <= float(threshold) <= 1.0:
                raise ValueError(f"iou_threshold must lie in [0, 1]; got {threshold!r}")
        if fields.normalisation is not None and not isinstance(fields.normalisation, str):
            raise ValueError(
                f"normalisation must be a family name or None; got {fields.normalisation!r}"
            )
        patch = fields.patch
        if isinstance(patch, dict):
            patch = PatchProtocol(**patch)
        if patch is not None and not isinstance(patch, PatchProtocol):
            raise ValueError(f"patch must be a PatchProtocol, a dict or None; got {patch!r}")
        return super().__new__(
            cls,
            *fields._replace(
                patch_size=_positive_or_none("patch_size", fields.patch_size),
                num_steps=_positive_or_none("num_steps", fields.num_steps),
                step_size=_positive_or_none("step_size", fields.step_size),
                insertion_substrate=_substrate("insertion_substrate", fields.insertion_substrate),
                deletion_substrate=_substrate("deletion_substrate", fields.deletion_substrate),
                patch=patch,
            ),
        )

    def replace(self, **changes: Any) -> Protocol:
        """A copy with ``changes``, validated again (unlike ``_replace``)."""
        return Protocol(**{**self._asdict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (substrates as ``{"kind", "value"}``)."""
        out = {}
        for name, value in self._asdict().items():
            if isinstance(value, Substrate):
                value = value._asdict()
            elif isinstance(value, PatchProtocol):
                value = {**value._asdict(), "substrate": value.substrate._asdict()}
            out[name] = value
        return out


def protocol_from_dict(fields: dict[str, Any]) -> Protocol:
    """The inverse of :meth:`Protocol.to_dict` (also takes legacy substrate names)."""
    fields = dict(fields)
    for name in ("insertion_substrate", "deletion_substrate"):
        if isinstance(fields.get(name), dict):
            fields[name] = Substrate(**fields[name])
    patch = fields.get("patch")
    if isinstance(patch, dict) and isinstance(patch.get("substrate"), dict):
        fields["patch"] = {**patch, "substrate": Substrate(**patch["substrate"])}
    return Protocol(**fields)
