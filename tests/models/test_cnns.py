"""VGG-16 against a plain torch.nn build, adaptive pooling, CNN aux/perturb
conventions and parameter counts of the torchvision architectures."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from fastxai_jax.models import build, convert, init_perturbations, random_variables
from fastxai_jax.models.vgg import VGG16, VGG16_CFG, adaptive_avg_pool


def _torch_vgg16(num_classes: int, width: int) -> torch.nn.Module:
    """torchvision's vgg16 layout written out in plain torch.nn."""
    layers, channels = [], 3
    for item in VGG16_CFG:
        if item == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(channels, item, 3, padding=1), torch.nn.ReLU(True)]
            channels = item
    model = torch.nn.Module()
    model.features = torch.nn.Sequential(*layers)
    model.avgpool = torch.nn.AdaptiveAvgPool2d((7, 7))
    model.classifier = torch.nn.Sequential(
        torch.nn.Linear(512 * 49, width), torch.nn.ReLU(True), torch.nn.Dropout(),
        torch.nn.Linear(width, width), torch.nn.ReLU(True), torch.nn.Dropout(),
        torch.nn.Linear(width, num_classes),
    )  # fmt: skip
    model.forward = lambda x: model.classifier(torch.flatten(model.avgpool(model.features(x)), 1))
    return model.eval()


@pytest.fixture(scope="module")
def vgg_pair():
    torch.manual_seed(0)
    model = _torch_vgg16(num_classes=3, width=32)
    with torch.no_grad():  # keep activations O(1) through 13 random conv layers
        for layer in model.features:
            if isinstance(layer, torch.nn.Conv2d):
                layer.weight.mul_(3.0)
    state_dict = {k: v.numpy() for k, v in model.state_dict().items()}
    variables = convert.convert_torchvision_vgg16(state_dict)
    return model, state_dict, variables


def test_vgg16_converted_params_are_transposed_torch_tensors(vgg_pair):
    _, sd, variables = vgg_pair
    params = variables["params"]
    assert "batch_stats" not in variables
    np.testing.assert_array_equal(
        params["features_28"]["kernel"], sd["features.28.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(params["classifier_0"]["kernel"], sd["classifier.0.weight"].T)
    np.testing.assert_array_equal(params["classifier_6"]["bias"], sd["classifier.6.bias"])


def test_vgg16_first_conv_matches_numpy_cross_correlation(vgg_pair):
    _, sd, variables = vgg_pair
    x = np.random.default_rng(0).normal(size=(1, 6, 5, 3)).astype(np.float32)
    got = nn.Conv(64, (3, 3), padding=((1, 1), (1, 1))).apply(
        {"params": variables["params"]["features_0"]}, jnp.asarray(x)
    )
    weight, bias = sd["features.0.weight"], sd["features.0.bias"]  # [O, I, 3, 3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((1, 6, 5, 64), np.float32) + bias
    for i in range(6):
        for j in range(5):
            window = padded[0, i : i + 3, j : j + 3, :]  # [3, 3, I]
            expected[0, i, j] += np.einsum("hwi,oihw->o", window, weight)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def test_vgg16_logits_match_torch(vgg_pair):
    model, _, variables = vgg_pair
    x = np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    module = VGG16(num_classes=3, classifier_width=32)
    logits, aux = jax.jit(lambda v, x: module.apply(v, x))(
        variables, jnp.asarray(x.transpose(0, 2, 3, 1))
    )
    assert np.abs(expected).max() > 1e-2  # a non-degenerate comparison
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=1e-5)
    assert aux["features"]["conv5_3"].shape == (2, 4, 4, 512)
    assert aux["features"]["features"].shape == (2, 2, 2, 512)


@pytest.mark.parametrize("in_size,out_size", [(2, 7), (5, 7), (7, 7), (13, 7), (10, 4), (9, 1)])
def test_adaptive_avg_pool_matches_torch(in_size, out_size):
    x = np.random.default_rng(in_size).normal(size=(2, in_size, in_size + 1, 3))
    x = x.astype(np.float32)
    got = adaptive_avg_pool(jnp.asarray(x), (out_size, out_size))
    expected = torch.nn.functional.adaptive_avg_pool2d(
        torch.from_numpy(x.transpose(0, 3, 1, 2)), (out_size, out_size)
    )
    np.testing.assert_allclose(np.asarray(got), expected.numpy().transpose(0, 2, 3, 1), atol=1e-6)


def _num_params(module, size=64):
    shapes = jax.eval_shape(
        lambda: module.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)
    )
    return sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes["params"])), shapes


# torchvision's published parameter counts for 1000 classes.
TORCHVISION_COUNTS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}
SLOW_COUNTS = {"resnet101": 44_549_160, "resnet152": 60_192_808}


def test_vgg16_parameter_count_and_feature_maps():
    module, family = build("vgg16", num_classes=1000)
    count, shapes = _num_params(module, size=224)
    assert (family, count) == ("imagenet", 138_357_544)
    perturbations = init_perturbations(module, shapes, jnp.zeros((2, 224, 224, 3)))
    assert jax.tree.map(jnp.shape, perturbations) == {
        "conv5_3": (2, 14, 14, 512),
        "features": (2, 7, 7, 512),
    }


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_resnet_parameter_counts_and_feature_maps(name):
    module, family = build(name, num_classes=1000)
    count, shapes = _num_params(module)
    assert family == "imagenet"
    assert count == TORCHVISION_COUNTS[name]
    assert "perturbations" not in shapes  # not tied to the init batch size
    perturbations = init_perturbations(module, shapes, jnp.zeros((3, 64, 64, 3)))
    assert sorted(perturbations) == ["layer1", "layer2", "layer3", "layer4"]
    channels = 2048 if name == "resnet50" else 512
    assert perturbations["layer4"].shape == (3, 2, 2, channels)
    assert perturbations["layer1"].shape == (3, 16, 16, channels // 8)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_COUNTS))
def test_large_model_parameter_counts(name):
    module, _ = build(name, num_classes=1000)
    assert _num_params(module)[0] == SLOW_COUNTS[name]


def test_resnet_gradcam_perturbation_gradient_equals_feature_gradient(key):
    """d logit / d perturbation['layer4'] is the gradient at the layer4 map."""
    module, _ = build("resnet18", num_classes=5)
    x = jax.random.normal(key, (1, 32, 32, 3))
    variables = random_variables(module, x)
    perturbations = init_perturbations(module, variables, x)

    def logit(perturb):
        logits, _ = module.apply({**variables, "perturbations": perturb}, x)
        return logits[0, 2]

    grads = jax.jit(jax.grad(logit))(perturbations)
    assert grads["layer4"].shape == (1, 1, 1, 512)
    # layer4 -> global mean -> fc: the gradient is fc's column for class 2.
    expected = variables["params"]["fc"]["kernel"][:, 2]
    np.testing.assert_allclose(grads["layer4"][0, 0, 0], expected, atol=1e-6)


def test_batchnorm_uses_running_statistics_at_eval(key):
    module, _ = build("resnet18", num_classes=4)
    x = jax.random.normal(key, (2, 32, 32, 3))
    variables = random_variables(module, x)
    # Shifted running statistics so eval and train modes differ visibly.
    variables["batch_stats"] = jax.tree.map(lambda s: s + 0.5, variables["batch_stats"])
    apply = jax.jit(lambda v, x: module.apply(v, x)[0])
    pair = apply(variables, x)
    other = apply(variables, x.at[1].set(-x[1]))
    np.testing.assert_allclose(other[0], pair[0], atol=1e-5)  # no batch coupling
    (train_logits, _), updates = jax.jit(
        lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"])
    )(variables, x)
    assert not np.allclose(train_logits, pair, atol=1e-3)
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
        variables["batch_stats"]
    )
