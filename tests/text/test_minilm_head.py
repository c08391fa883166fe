"""The ``head_hidden`` option of :class:`BertClassifier` and ``minilm_classifier`` (issue 21):
0 keeps the linear Hugging Face head exactly; > 0 is Dense → exact GELU → Dense."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from fastxai_jax.models.bert import BertClassifier
from tests.text.conftest import make_batch

SIZES = dict(
    num_classes=3, vocab_size=50, hidden_size=16, depth=2, num_heads=2, mlp_dim=32,
    max_position_embeddings=24, dropout_rate=0.0, pooling="mean",
)  # fmt: skip


def _ids():
    return make_batch([[5, 6, 7, 8], [9, 10]])


def _shapes(tree):
    return jax.tree.map(np.shape, tree)


def test_head_hidden_zero_is_the_linear_head_exactly():
    ids, mask = _ids()
    default = BertClassifier(**SIZES)
    explicit = BertClassifier(**SIZES, head_hidden=0)
    v_default = default.init(jax.random.key(3), ids)
    v_explicit = explicit.init(jax.random.key(3), ids)
    assert _shapes(v_default) == _shapes(v_explicit)
    assert "head" not in v_explicit["params"]
    assert _shapes(v_explicit["params"]["classifier"]) == {"kernel": (16, 3), "bias": (3,)}
    jax.tree.map(np.testing.assert_array_equal, v_default, v_explicit)
    logits, aux = explicit.apply(v_explicit, ids, attention_mask=mask)
    np.testing.assert_array_equal(logits, default.apply(v_default, ids, attention_mask=mask)[0])
    head = v_explicit["params"]["classifier"]
    expected = np.asarray(aux["pooled"]) @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_mlp_head_is_dense_gelu_dense_on_the_masked_mean():
    ids, mask = _ids()
    module = BertClassifier(**SIZES, head_hidden=5)
    variables = module.init(jax.random.key(4), ids)
    params = variables["params"]
    assert "classifier" not in params
    assert _shapes(params["head"]) == {
        "hidden": {"kernel": (16, 5), "bias": (5,)},
        "classifier": {"kernel": (5, 3), "bias": (3,)},
    }
    # The encoder's params are those of the linear module with the same key.
    linear = BertClassifier(**SIZES).init(jax.random.key(4), ids)["params"]
    for name in linear:
        if name != "classifier":
            jax.tree.map(np.testing.assert_array_equal, linear[name], params[name])
    logits, aux = module.apply(variables, ids, attention_mask=mask)
    head = jax.tree.map(lambda a: np.asarray(a, np.float64), params["head"])
    pre = np.asarray(aux["pooled"], np.float64) @ head["hidden"]["kernel"] + head["hidden"]["bias"]
    gelu = 0.5 * pre * (1.0 + erf(pre / np.sqrt(2.0)))  # exact GELU
    expected = gelu @ head["classifier"]["kernel"] + head["classifier"]["bias"]
    assert logits.shape == (2, 3)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    # Padding never reaches the head: the second row alone, unpadded, gives the same logits.
    alone, alone_mask = make_batch([[9, 10]])
    single = module.apply(variables, alone, attention_mask=alone_mask)[0]
    np.testing.assert_allclose(single[0], logits[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="head_hidden"):
        BertClassifier(**SIZES, head_hidden=-1).init(jax.random.key(0), ids)


def test_load_minilm_mlp_head_starts_at_zero_logits_on_the_same_encoder():
    from fastxai_jax.models import minilm

    _, linear = minilm.load_minilm()
    module, variables = minilm.load_minilm(head_hidden=8)
    assert module.head_hidden == 8 and module.pooling == "mean"
    params = variables["params"]
    assert set(params) == (set(linear["params"]) - {"classifier"}) | {"head"}
    for name in params:
        if name != "head":
            jax.tree.map(np.testing.assert_array_equal, linear["params"][name], params[name])
    assert _shapes(params["head"]) == {
        "hidden": {"kernel": (384, 8), "bias": (8,)},
        "classifier": {"kernel": (8, 2), "bias": (2,)},
    }
    ids, mask = minilm.tokenize(minilm.load_tokenizer(), ["the movie was not good"])
    np.testing.assert_array_equal(module.apply(variables, ids, attention_mask=mask)[0], 0.0)
    for bad in (-1, True, 2.0):
        with pytest.raises(ValueError, match="head_hidden"):
            minilm.load_minilm(head_hidden=bad)


def test_train_mlp_head_resumes_and_refuses_a_linear_checkpoint(tmp_path):
    from fastxai_jax.models.minilm_classifier import train_minilm_classifier

    options = dict(num_train=32, batch_size=16, num_steps=3)
    module, variables = train_minilm_classifier(tmp_path / "mlp", head_hidden=8, **options)
    assert module.head_hidden == 8 and "head" in variables["params"]
    _, again = train_minilm_classifier(tmp_path / "mlp", head_hidden=8, **options)
    jax.tree.map(np.testing.assert_array_equal, variables, again)
    # The model's logits are the trained head on the cached sentence embeddings.
    from fastxai_jax.models.bert import MLPHead

    with np.load(tmp_path / "mlp" / "embeddings_train0.npz") as saved:
        ids, mask, x = saved["input_ids"], saved["attention_mask"], saved["embeddings"]
    logits = module.apply(variables, jnp.asarray(ids[:4]), attention_mask=jnp.asarray(mask[:4]))[0]
    head = MLPHead(8, 2).apply({"params": variables["params"]["head"]}, jnp.asarray(x[:4]))
    np.testing.assert_allclose(logits, head, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(logits).max()) > 0.0  # trained away from the zero init
    train_minilm_classifier(tmp_path / "linear", **options)
    # A linear head's checkpoint is refused (its tree differs before its config is read).
    with pytest.raises(ValueError, match="does not match the template|differs from config"):
        train_minilm_classifier(tmp_path / "linear", head_hidden=8, **options)
    with pytest.raises(ValueError, match="head_hidden"):
        train_minilm_classifier(None, head_hidden=-2)
    # The model zoo loads either head as saved, at its last step, and trains neither further.
    from fastxai_jax.models import load_pretrained
    from fastxai_jax.models.minilm_classifier import saved_options

    linear_module, linear = train_minilm_classifier(tmp_path / "linear", **options)
    assert saved_options(tmp_path / "linear") == dict(
        options, learning_rate=1e-2, seed=0, num_steps=3
    )
    for run, module_want, want in (("linear", linear_module, linear), ("mlp", module, variables)):
        got_module, got = load_pretrained("minilm_classifier", tmp_path / run)
        assert got_module.head_hidden == module_want.head_hidden
        jax.tree.map(np.testing.assert_array_equal, want, got)
        assert saved_options(tmp_path / run)["num_steps"] == 3
    assert saved_options(tmp_path / "nothing") is None
