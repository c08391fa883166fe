"""An embedded text benchmark with token-level ground truth (the text twin of
:mod:`fastxai_jax.data.groundtruth`).

Each sentence is drawn from a seed: a review clause ``the <subject> <verb>
[not|never] <sentiment word>`` sits among distractor clauses built from neutral
words (people, places, times, colours). The label is decided by the evidence
alone: positive iff the sentiment word is positive XOR the clause is negated.
Distractor words are sentiment-free and never change the label. The ground
truth is the set of token positions of the evidence words (the sentiment word,
and the negator when present), aligned with the tokenizer's positions ([CLS]
at 0); [CLS], [SEP] and padding are never evidence.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

POSITIVE_WORDS = (
    "good", "great", "excellent", "wonderful", "superb", "brilliant", "delightful",
    "fantastic", "lovely", "enjoyable", "pleasant", "charming",
)  # fmt: skip
NEGATIVE_WORDS = (
    "bad", "terrible", "awful", "poor", "horrible", "dreadful", "boring", "dull",
    "weak", "disappointing", "annoying", "bland",
)  # fmt: skip
NEGATORS = ("not", "never")
SUBJECTS = (
    "movie", "film", "plot", "story", "acting", "cast", "music", "script", "ending",
    "scene", "dialogue", "soundtrack",
)  # fmt: skip
VERBS = ("was", "is", "felt", "seemed", "looked")
_PEOPLE = ("we", "i", "they", "she", "he", "my friend", "my brother", "my sister", "our neighbor")
_ACTIONS = ("saw it", "watched it", "went", "visited the cinema", "sat in the theater")
_TIMES = ("yesterday", "today", "on tuesday", "in the evening", "in the morning", "after work")
_PLACES = ("downtown", "in the city", "with a friend", "in the red seats", "near the blue door")
CLASS_NAMES = ("negative", "positive")


class TextBenchmark(NamedTuple):
    """A generated split.

    Attributes:
      texts: ``N`` sentences.
      labels: ``[N]`` int32, 1 = positive.
      input_ids: ``[N, T]`` int32 token ids, right-padded.
      attention_mask: ``[N, T]`` int32, 1 on real tokens ([CLS]/[SEP] included).
      evidence: ``[N, T]`` bool, True on the tokens of the deciding words.
      negated: ``[N]`` bool, whether the review clause is negated.
    """

    texts: list[str]
    labels: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray
    evidence: np.ndarray
    negated: np.ndarray


def _distractor(rng: np.random.Generator) -> list[str]:
    parts = [
        _PEOPLE[rng.integers(len(_PEOPLE))],
        _ACTIONS[rng.integers(len(_ACTIONS))],
        _TIMES[rng.integers(len(_TIMES))],
    ]
    if rng.random() < 0.5:
        parts.append(_PLACES[rng.integers(len(_PLACES))])
    return " ".join(parts).split()


def _sentence(rng: np.random.Generator, label: int, negation_rate: float):
    """Words of one sentence and the indices of its evidence words."""
    negated = bool(rng.random() < negation_rate)
    polarity = label ^ int(negated)  # the sentiment word's own polarity
    words_of = POSITIVE_WORDS if polarity else NEGATIVE_WORDS
    review = ["the", SUBJECTS[rng.integers(len(SUBJECTS))], VERBS[rng.integers(len(VERBS))]]
    evidence = []
    if negated:
        evidence.append(len(review))
        review.append(NEGATORS[rng.integers(len(NEGATORS))])
    evidence.append(len(review))
    review.append(words_of[rng.integers(len(words_of))])
    layout = rng.integers(3)  # distractor before, after, or on both sides
    before = _distractor(rng) + ["and"] if layout in (0, 2) else []
    after = ["and"] + _distractor(rng) if layout in (1, 2) else []
    return before + review + after, [len(before) + i for i in evidence], negated


def make_text_benchmark(
    num_examples: int,
    tokenizer: Any,
    *,
    seed: int = 0,
    negation_rate: float = 0.4,
) -> TextBenchmark:
    """Generates a balanced split of sentences with evidence-token ground truth.

    Args:
      num_examples: ``N`` sentences (labels alternate, then are shuffled).
      tokenizer: a ``tokenizers.Tokenizer`` that pads (see
        :func:`fastxai_jax.models.minilm.load_tokenizer`).
      seed: the split is a pure function of ``seed``.
      negation_rate: probability that the review clause is negated.

    Returns:
      A :class:`TextBenchmark`.
    """
    if not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"num_examples must be a positive int; got {num_examples!r}")
    if not 0.0 <= float(negation_rate) <= 1.0:
        raise ValueError(f"negation_rate must lie in [0, 1]; got {negation_rate!r}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_examples) % 2).astype(np.int32)
    sentences = [_sentence(rng, int(label), float(negation_rate)) for label in labels]
    encodings = tokenizer.encode_batch([words for words, _, _ in sentences], is_pretokenized=True)
    input_ids = np.asarray([e.ids for e in encodings], np.int32)
    attention_mask = np.asarray([e.attention_mask for e in encodings], np.int32)
    evidence = np.zeros(input_ids.shape, bool)
    for row, (encoding, (_, evidence_words, _)) in enumerate(
        zip(encodings, sentences, strict=True)
    ):
        word_ids = np.asarray([-1 if w is None else w for w in encoding.word_ids])
        evidence[row] = np.isin(word_ids, evidence_words) & (word_ids >= 0)
    return TextBenchmark(
        texts=[" ".join(words) for words, _, _ in sentences],
        labels=labels,
        input_ids=input_ids,
        attention_mask=attention_mask,
        evidence=evidence,
        negated=np.asarray([neg for _, _, neg in sentences]),
    )


def drop_tokens(
    bench: TextBenchmark,
    fill_id: int,
    *,
    evidence: bool = True,
    other_fraction: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Copies of a split with tokens removed as the token metrics' ``fill="drop"`` does.

    A removed token becomes ``fill_id`` and leaves the attention (positions are
    kept). ``evidence=True`` removes every evidence token: what is left carries no
    label, the ROAR-style null inputs of
    :func:`fastxai_jax.models.minilm_classifier.train_minilm_classifier`. With
    ``other_fraction > 0`` each sentence also loses a share ``u ~ U[0,
    other_fraction]`` of its other content tokens (real tokens except the first
    and last, [CLS]/[SEP]); with ``evidence=False`` that keeps the label.

    Args:
      bench: a :class:`TextBenchmark` split.
      fill_id: the id a removed token gets (the metrics use ``[MASK]``).
      evidence: remove the evidence tokens.
      other_fraction: largest share of the non-evidence content tokens also removed.
      seed: the random shares and tokens are a pure function of ``seed``.

    Returns:
      ``(input_ids, attention_mask)``, both ``[N, T]`` int32.
    """
    if not 0.0 <= float(other_fraction) <= 1.0:
        raise ValueError(f"other_fraction must lie in [0, 1]; got {other_fraction!r}")
    mask = np.asarray(bench.attention_mask, bool)
    length = mask.sum(axis=1)
    positions = np.arange(mask.shape[1])[None, :]
    content = mask & (positions > 0) & (positions < length[:, None] - 1)
    removed = bench.evidence & content if evidence else np.zeros_like(content)
    if other_fraction > 0:
        rng = np.random.default_rng(seed)
        share = rng.uniform(0.0, float(other_fraction), size=(mask.shape[0], 1))
        removed = removed | (content & ~bench.evidence & (rng.random(mask.shape) < share))
    input_ids = np.where(removed, fill_id, bench.input_ids).astype(np.int32)
    return input_ids, (mask & ~removed).astype(np.int32)
