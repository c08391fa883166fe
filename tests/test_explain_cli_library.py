"""The library behind ``fastxai explain`` (issue 17: the CLI is argument parsing only):
image files, the target, ``make_explain_fn``, the explain loop and its outputs."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.data.images import load_images
from fastxai_jax.evaluation.explain import explain_images, save_maps
from fastxai_jax.evaluation.explain_text import save_text
from fastxai_jax.explainers import registry
from fastxai_jax.explainers.explain_fn import describe_methods, make_explain_fn
from fastxai_jax.models import build, make_apply_fn
from fastxai_jax.train.target_source import init_target, load_zoo_target


@pytest.fixture(scope="module")
def target():
    return init_target("small_cnn", 8, 24, 3)


def test_load_images_scales_bytes_greys_and_drops_alpha(tmp_path):
    from skimage import io

    io.imsave(
        tmp_path / "rgba.png", np.full((4, 6, 4), (51, 102, 204, 7), np.uint8), check_contrast=False
    )
    io.imsave(tmp_path / "grey.png", np.full((5, 5), 153, np.uint8), check_contrast=False)
    images, names = load_images([str(tmp_path / "rgba.png"), str(tmp_path / "grey.png")], 3)
    assert images.shape == (2, 3, 3, 3) and images.dtype == np.float32
    assert names == ["rgba", "grey"]
    np.testing.assert_allclose(images[0], np.broadcast_to([0.2, 0.4, 0.8], (3, 3, 3)), atol=1e-6)
    np.testing.assert_allclose(images[1], 0.6, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="--images: no such file"):
        load_images([str(tmp_path / "missing.png")], 3, flag="--images")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="paths: cannot read"):
        load_images([str(tmp_path / "text.png")], 3)
    with pytest.raises(ValueError, match="paths"):
        load_images([], 3)


def test_init_target_is_the_eager_init_bit_for_bit(target):
    # `fastxai evaluate --untrained` used an eager init, `explain` a compiled one: both now
    # call init_target, which this pins to the eager params.
    module, variables, family = target
    eager_module, eager_family = build("small_cnn", num_classes=8)
    eager = eager_module.init(jax.random.key(3), jnp.zeros((1, 24, 24, 3)), train=False)
    assert family == eager_family
    assert jax.tree.structure(variables) == jax.tree.structure(eager)
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(eager), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    same = load_zoo_target("small_cnn", image_size=24, untrained=True, num_classes=8, seed=3)[1]
    jax.tree.map(np.testing.assert_array_equal, same, variables)
    with pytest.raises(ValueError, match="--weights"):
        load_zoo_target("resnet18", image_size=24)


def test_explain_images_equals_direct_calls_and_ignores_batch_size(target):
    module, variables, family = target
    apply_fn = make_apply_fn(module, family)
    images = np.asarray(jax.random.uniform(jax.random.key(0), (3, 24, 24, 3)))
    key = jax.random.key(7)
    explain, cost = make_explain_fn("saliency", module, variables, family, model="small_cnn")
    assert cost == {"forward": 1, "backward": 1}
    maps, targets, seconds = explain_images(
        explain, apply_fn, variables, images, key=key, batch_size=2
    )
    predicted = np.argmax(np.asarray(apply_fn(variables, jnp.asarray(images))), axis=-1)
    np.testing.assert_array_equal(targets, predicted)
    direct = registry.attribute("saliency", apply_fn, variables, jnp.asarray(images), predicted)
    np.testing.assert_allclose(maps, np.asarray(direct), rtol=1e-6, atol=1e-9)
    assert seconds > 0
    _, targets, _ = explain_images(
        explain, apply_fn, variables, images, key=key, batch_size=2, target=5
    )
    np.testing.assert_array_equal(targets, 5)
    # RISE with a key per image index: the same maps for any batch size
    rise, cost = make_explain_fn("rise", module, variables, family, options={"num_masks": 16})
    assert cost == {"forward": 16, "backward": 0}
    run = lambda b: explain_images(  # noqa: E731
        rise, apply_fn, variables, images, key=key, batch_size=b, per_image_keys=True
    )[0]
    np.testing.assert_allclose(run(1), run(3), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="batch_size"):
        explain_images(explain, apply_fn, variables, images, key=key, batch_size=0)


def test_make_explain_fn_defaults_and_refusals(target):
    module, variables, family = target
    x = jax.random.uniform(jax.random.key(1), (2, 24, 24, 3))
    target_class = jnp.array([1, 4])
    by_default, _ = make_explain_fn("GradCAM", module, variables, family, model="small_cnn")
    explicit, _ = make_explain_fn(
        "gradcam", module, variables, family, options={"layer": "conv_last"}
    )
    np.testing.assert_array_equal(
        by_default(x, target_class, None), explicit(x, target_class, None)
    )
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        make_explain_fn("nope", module, variables, family)
    learned = next(name for name in registry.available_methods() if registry.is_learned(name))
    with pytest.raises(ValueError, match="--explainer-ckpt"):
        make_explain_fn(learned, module, variables, family)
    lines = describe_methods()
    assert len(lines) == len(registry.available_methods())
    assert any(line.split()[:2] == ["saliency", "per-input"] for line in lines)


def test_save_maps_and_save_text_write_what_they_get(tmp_path):
    images = np.zeros((2, 4, 4, 3), np.float32)
    maps = np.arange(32, dtype=np.float32).reshape(2, 4, 4)
    out = save_maps(tmp_path, ["a", "b"], images, maps, np.array([0, 3]), {"k": 1}, png=False)
    np.testing.assert_array_equal(np.load(out / "attributions.npy"), maps)
    np.testing.assert_array_equal(np.load(out / "b.npy"), maps[1])
    assert json.loads((out / "summary.json").read_text()) == {"k": 1}
    assert not (out / "a.png").exists()
    with pytest.raises(ValueError, match="one entry per image"):
        save_maps(tmp_path, ["a"], images, maps, np.array([0, 3]), {})
    records = [{"text": "a b", "tokens": ["[CLS]", "a", "b", "[SEP]"],
                "relevance": [0.0, 0.25, -1.0, 0.0], "target": 1, "predicted": 0}]  # fmt: skip
    page = save_text(tmp_path / "text", records, "saliency on m")
    assert json.loads((tmp_path / "text" / "text.json").read_text()) == records
    assert "class 1 (predicted 0)" in page.read_text()
