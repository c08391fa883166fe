"""Safe loading and converter validation (missing / wrong-shape / extra keys)."""

import pickle

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from fastxai_jax.models import convert, convert_hf_vit, convert_timm_vit, detect_layout


@pytest.fixture(scope="module")
def resnet18_sd(fixtures_dir):
    return convert.load_state_dict(fixtures_dir / "torchvision_resnet18.safetensors")


def test_safetensors_float16_is_cast_to_float32(resnet18_sd, fixtures_dir):
    from safetensors.numpy import load_file

    raw = load_file(str(fixtures_dir / "torchvision_resnet18.safetensors"))
    assert raw["conv1.weight"].dtype == np.float16
    assert resnet18_sd["conv1.weight"].dtype == np.float32
    np.testing.assert_array_equal(resnet18_sd["conv1.weight"], raw["conv1.weight"])


def test_torch_file_round_trip(tmp_path):
    tensors = {"a.weight": torch.arange(6.0).reshape(2, 3).half(), "a.steps": torch.tensor(3)}
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tensors.items()}}, path)
    loaded = convert.load_state_dict(path)
    assert sorted(loaded) == ["a.steps", "a.weight"]
    assert loaded["a.weight"].dtype == np.float32
    np.testing.assert_array_equal(loaded["a.weight"], np.arange(6.0).reshape(2, 3))
    assert loaded["a.steps"] == 3


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"w": _Payload()}))
    with pytest.raises(ValueError, match="evil.pt"):
        convert.load_state_dict(path)
    assert "must never run" not in capsys.readouterr().out


@pytest.mark.parametrize("name", ["broken.safetensors", "broken.pth"])
def test_corrupt_file_names_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x01 definitely not weights")
    with pytest.raises(ValueError, match=name):
        convert.load_state_dict(path)


def test_unsupported_extension_and_missing_file(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, a=np.zeros(2))
    with pytest.raises(ValueError, match=r"w\.npz.*extension"):
        convert.load_state_dict(path)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        convert.load_state_dict(tmp_path / "nope.safetensors")


def test_non_tensor_entry_is_rejected(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"a.weight": torch.zeros(2), "epoch": 3}, path)
    with pytest.raises(ValueError, match="'epoch'"):
        convert.load_state_dict(path)


def test_converted_resnet_leaves_are_transposed_torch_tensors(resnet18_sd):
    variables = convert.convert_torchvision_resnet(resnet18_sd, 18)
    params, stats = variables["params"], variables["batch_stats"]
    np.testing.assert_array_equal(
        params["layer2_0"]["downsample_conv"]["kernel"],
        resnet18_sd["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(params["fc"]["kernel"], resnet18_sd["fc.weight"].T)
    np.testing.assert_array_equal(
        stats["layer3_1"]["bn2"]["var"], resnet18_sd["layer3.1.bn2.running_var"]
    )
    np.testing.assert_array_equal(
        params["layer4_1"]["bn1"]["scale"], resnet18_sd["layer4.1.bn1.weight"]
    )


def test_missing_key_is_named(resnet18_sd):
    sd = dict(resnet18_sd)
    del sd["layer1.0.conv1.weight"]
    with pytest.raises(ValueError, match=r"missing key 'layer1\.0\.conv1\.weight'"):
        convert.convert_torchvision_resnet(sd, 18)


def test_wrong_shape_is_named_with_both_shapes(resnet18_sd):
    sd = dict(resnet18_sd)
    sd["layer2.0.bn1.running_var"] = np.ones(64, np.float32)
    with pytest.raises(ValueError, match=r"'layer2\.0\.bn1\.running_var' has shape \(64,\); "
                       r"expected \(128,\)"):  # fmt: skip
        convert.convert_torchvision_resnet(sd, 18)


def test_unexpected_key_is_named_and_buffers_ignored(resnet18_sd):
    sd = dict(resnet18_sd)
    sd["bn1.num_batches_tracked"] = np.array(7)
    convert.convert_torchvision_resnet(sd, 18)  # num_batches_tracked is ignored
    sd["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"unexpected keys.*'layer5\.0\.conv1\.weight'"):
        convert.convert_torchvision_resnet(sd, 18)


def test_wrong_depth_reports_first_mismatch(resnet18_sd):
    with pytest.raises(ValueError, match=r"'layer1\.0\.conv1\.weight' has shape \(64, 64, 3, 3\); "
                       r"expected \(64, 64, 1, 1\)"):  # fmt: skip
        convert.convert_torchvision_resnet(resnet18_sd, 50)


def test_timm_vit_qkv_split(fixtures_dir):
    sd = convert.load_state_dict(fixtures_dir / "timm_vit_tiny_patch16_224.safetensors")
    params = convert_timm_vit(sd)["params"]
    qkv = sd["blocks.3.attn.qkv.weight"]
    for i, name in enumerate(("query", "key", "value")):
        got = params["block_3"]["attn"][name]["kernel"]
        np.testing.assert_array_equal(got, qkv[192 * i : 192 * (i + 1)].T)
    np.testing.assert_array_equal(
        params["block_3"]["attn"]["value"]["bias"], sd["blocks.3.attn.qkv.bias"][384:]
    )


def test_hf_vit_old_naming_is_read(fixtures_dir):
    """transformers 4.x key names map to the same variables as 5.x names."""
    sd = convert.load_state_dict(fixtures_dir / "hf_vit_192d_4l.safetensors")
    renames = {
        "layers.": "encoder.layer.", "attention.q_proj": "attention.attention.query",
        "attention.k_proj": "attention.attention.key",
        "attention.v_proj": "attention.attention.value",
        "attention.o_proj": "attention.output.dense", "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
    }  # fmt: skip
    old = {}
    for key, value in sd.items():
        for new_name, old_name in renames.items():
            key = key.replace(new_name, old_name)
        old[key] = value
    new_vars = convert_hf_vit(sd)
    old_vars = convert_hf_vit(old)
    assert jax.tree.structure(new_vars) == jax.tree.structure(old_vars)
    for a, b in zip(jax.tree.leaves(new_vars), jax.tree.leaves(old_vars), strict=True):
        np.testing.assert_array_equal(a, b)


def test_detect_layout(resnet18_sd):
    assert detect_layout(resnet18_sd) == "torchvision"
    assert detect_layout({"_conv_stem.weight": 0}) == "efficientnet-lite0-pypi"
    assert detect_layout({"patch_embed.proj.weight": 0}) == "timm"
    assert detect_layout({"bert.pooler.dense.weight": 0}) == "hf"
    with pytest.raises(ValueError, match="layout"):
        detect_layout({"foo": 0})


def test_safetensors_float16_and_bfloat16(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"x": np.ones((2, 2), np.float16)}, str(path))
    assert convert.load_state_dict(path)["x"].dtype == np.float32
    from safetensors.torch import save_file as save_torch

    save_torch({"y": torch.full((3,), 1.5, dtype=torch.bfloat16)}, str(path))
    loaded = convert.load_state_dict(path)["y"]
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, [1.5, 1.5, 1.5])
