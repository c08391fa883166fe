"""``fastxai explain --text`` and the FEX-over-tokens training on the text benchmark."""

import json
import re

import jax
import numpy as np
import pytest

from fastxai_jax.cli import build_parser
from fastxai_jax.explainers import registry


def _explain(*argv):
    """Runs ``fastxai explain ARGV`` letting a ValueError through (``main`` prints it)."""
    args = build_parser().parse_args(["explain", *argv])
    return args.func(args)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--method", "saliency", "--model", "small_cnn"], "--model"),
        (["--method", "gradcam", "--model", "minilm_classifier"], "--method 'gradcam'"),
        (["--method", "big", "--model", "minilm_classifier"], "cannot explain text"),
        (["--method", "saliency", "--model", "minilm_classifier", "--dataset", "groundtruth"],
         "--text cannot be combined"),
    ],
)  # fmt: skip
def test_text_flag_refuses_bad_arguments(argv, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        _explain(*argv, "--text", "the movie was great", "--out", str(tmp_path))


@pytest.mark.slow  # trains the classifier head (~1 min) unless cached
def test_text_flag_prints_highlights_and_writes_html(minilm_classifier, tmp_path, capsys):
    workdir, module, variables, fns, tokenizer = minilm_classifier
    sentences = ["we went downtown and the movie was not good", "the plot felt wonderful"]
    code = _explain(
        "--method", "saliency", "--model", "minilm_classifier", "--workdir", str(workdir),
        "--text", *sentences, "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("\x1b[48;2;") >= 8  # one coloured background per word
    page = (tmp_path / "text.html").read_text()
    records = json.loads((tmp_path / "text.json").read_text())
    from fastxai_jax.models.minilm import tokenize

    ids, mask = tokenize(tokenizer, sentences)
    expected = np.asarray(registry.attribute("saliency", fns, variables, (ids, mask)))
    for i, record in enumerate(records):
        n = len(record["tokens"])
        np.testing.assert_allclose(record["relevance"], expected[i, :n], rtol=1e-5)
        assert record["predicted"] == i  # "not good" is negative, "wonderful" positive
    # The fully red span of each sentence is its argmax token.
    sentences_html = page.split("<tr>")[1:]
    for record, row in zip(records, sentences_html, strict=True):
        top = record["tokens"][int(np.argmax(record["relevance"]))]
        reddest = re.findall(r'rgb\(255,0,0\);color:#fff" title="[^"]*">([^<]*)<', row)
        assert reddest == [top.removeprefix("##")]


@pytest.mark.slow  # ~2-4 min on 2 shared CPU cores: 80 PPO steps of FEX over tokens
def test_trained_fex_beats_random_on_deletion_and_pointing(minilm_classifier, tmp_path):
    from fastxai_jax.data.text_benchmark import make_text_benchmark
    from fastxai_jax.evaluation.text import text_table, train_text_fex

    _, _, variables, fns, tokenizer = minilm_classifier
    train = make_text_benchmark(512, tokenizer, seed=1)
    test = make_text_benchmark(48, tokenizer, seed=4242)
    trained = train_text_fex(fns, variables, train, workdir=tmp_path / "fex", num_steps=80)
    rows, intervals, maps = text_table(
        fns, variables, test, trained, key=jax.random.key(0), rise_masks=200, ig_steps=8
    )
    by = {r["method"]: r for r in rows}
    assert by["fex"]["deletion_auc"] < by["random"]["deletion_auc"] - 0.05
    assert by["fex"]["pointing"] > by["random"]["pointing"] + 0.2
    assert intervals["fex-random:deletion_auc"].high < 0  # paired 95% interval below 0
    assert np.all(maps["fex"][test.attention_mask == 0] == 0.0)
    # Saved and reloaded, the explainer gives the same maps.
    from fastxai_jax.explainers.learned import fex_text
    from fastxai_jax.models.minilm import load_minilm

    encoder, encoder_params = load_minilm()
    again = fex_text.load(tmp_path / "fex", fns, module=encoder, backbone_params=encoder_params)
    np.testing.assert_allclose(
        again.explain((test.input_ids, test.attention_mask)), maps["fex"], atol=1e-6
    )
