"""Protocol and Substrate: validation naming the field, closed-form conversions."""

import jax
import numpy as np
import pytest

from fastxai_jax import metrics
from fastxai_jax.core import Substrate, as_substrate, to_fill
from fastxai_jax.evaluation import PatchProtocol, Protocol, protocol_from_dict
from fastxai_jax.metrics import _substrate
from fastxai_jax.models.normalization import IMAGENET_MEAN, IMAGENET_STD


def test_default_protocol_is_rise_pixel_protocol():
    protocol = Protocol()
    assert protocol.granularity == "pixel" and protocol.score == "prob"
    assert protocol.insertion_substrate == Substrate("blur")
    assert protocol.deletion_substrate == Substrate("constant", 0.0)
    assert protocol.patch is None and protocol.iou_threshold == "mean"


@pytest.mark.parametrize(
    "fields, name",
    [
        ({"granularity": "voxel"}, "granularity"),
        ({"score": "logit"}, "score"),
        ({"step_size": 0}, "step_size"),
        ({"num_steps": 2.5}, "num_steps"),
        ({"patch_size": True}, "patch_size"),
        ({"iou_threshold": 1.5}, "iou_threshold"),
        ({"iou_threshold": "median"}, "iou_threshold"),
        ({"insertion_substrate": "grey"}, "insertion_substrate"),
        ({"deletion_substrate": 2.0}, "deletion_substrate"),
        ({"normalisation": 3}, "normalisation"),
        ({"patch": "fex"}, "patch"),
        ({"patch": {"patch_size": 0}}, "patch_size"),
    ],
)
def test_protocol_bad_values_name_the_field(fields, name):
    with pytest.raises(ValueError, match=name):
        Protocol(**fields)


def test_protocol_replace_validates_and_round_trips_through_a_dict():
    protocol = Protocol(normalisation="half", patch=PatchProtocol(8, 10, "zeros_normalised"))
    assert protocol.patch.substrate == Substrate("family_mean")
    with pytest.raises(ValueError, match="score"):
        protocol.replace(score="nope")
    coloured = protocol.replace(deletion_substrate=(0.2, 0.4, 0.6))
    assert protocol_from_dict(coloured.to_dict()) == coloured


@pytest.mark.parametrize(
    "fields, name",
    [
        ({"kind": "noise"}, "kind"),
        ({"value": 1.5}, "value"),
        ({"value": -0.1}, "value"),
        ({"value": [[0.0]]}, "value"),
        ({"value": float("nan")}, "value"),
    ],
)
def test_substrate_bad_values_name_the_field(fields, name):
    with pytest.raises(ValueError, match=name):
        Substrate(**fields)


def test_substrate_conversions_closed_form():
    # black in ImageNet's normalised space is -mean / std per channel
    np.testing.assert_allclose(
        Substrate("constant", 0.0).to_normalised("imagenet"),
        -np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD),
    )
    np.testing.assert_allclose(Substrate("family_mean").to_normalised("imagenet"), 0.0)
    np.testing.assert_allclose(Substrate("family_mean").pixel_value("imagenet"), IMAGENET_MEAN)
    # the fills the explainers take: FastSHAP's -1 under "half" is black, DAX's 0 too
    assert to_fill(Substrate("constant", 0.0), "normalised", "half") == -1.0
    assert to_fill("zeros", "pixel") == 0.0
    assert to_fill(Substrate("family_mean"), "pixel", "half") == 0.5
    assert to_fill(Substrate("constant", 1.0), "normalised", "half") == 1.0
    with pytest.raises(ValueError, match="per-channel"):
        to_fill(Substrate("constant", 0.0), "normalised", "imagenet")
    with pytest.raises(ValueError, match="space"):
        to_fill(Substrate(), "logits", "half")
    with pytest.raises(ValueError, match="depends on the image"):
        to_fill(Substrate("blur"), "pixel")
    assert as_substrate("mean") == Substrate("image_mean")


def test_substrate_images_match_the_metrics_names(key):
    x = jax.random.uniform(key, (2, 12, 12, 3))
    for name, family in (("zeros", None), ("zeros_normalised", "imagenet"), ("blur", "half")):
        np.testing.assert_array_equal(
            _substrate.make_substrate(x, name, family), as_substrate(name).image(x, family)
        )
    grey = Substrate("constant", (0.2, 0.4, 0.6)).image(x)
    np.testing.assert_allclose(grey[1, 5, 7], [0.2, 0.4, 0.6], rtol=1e-6)
    np.testing.assert_allclose(
        Substrate("image_mean").image(x)[0, 3, 3], x[0].mean(axis=(0, 1)), rtol=1e-5
    )


def test_metrics_take_a_substrate_with_the_same_numbers(tiny_eval):
    tiny_apply, params, x, _ = tiny_eval
    attribution = x.sum(-1)
    by_name = metrics.insertion_deletion(
        tiny_apply, params, x, attribution, step_size=8,
        insertion_substrate="blur", deletion_substrate="zeros_normalised", normalisation="half",
    )  # fmt: skip
    by_substrate = metrics.insertion_deletion(
        tiny_apply, params, x, attribution, step_size=8,
        insertion_substrate=Substrate("blur"), deletion_substrate=Substrate("family_mean"),
        normalisation="half",
    )  # fmt: skip
    for mode in ("insertion", "deletion"):
        np.testing.assert_array_equal(by_name[mode].curve, by_substrate[mode].curve)
    with pytest.raises(ValueError, match="family_mean"):
        metrics.deletion(tiny_apply, params, x, attribution, substrate=Substrate("family_mean"))
