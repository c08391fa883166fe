"""The demo's text section: the --text flag, the cached FEX recipe check, the page."""

import shutil

import jax
import numpy as np
import pytest

from fastxai_jax.cli import build_parser
from fastxai_jax.evaluation import text, text_render


def test_demo_text_flag_defaults_on():
    parse = lambda *argv: build_parser().parse_args(["demo", *argv])
    assert parse().text is True
    assert parse("--no-text").text is False
    assert parse("--text").text is True


def test_demo_recipe_is_an_explicit_choice_beside_the_paper_default():
    from fastxai_jax.explainers.learned.fex_text import TextFexConfig

    recipe, paper = text.demo_fex_config(), TextFexConfig(num_classes=2)
    deletion = text.demo_fex_deletion_config()
    recipe.validate()
    deletion.validate()
    assert (paper.reward_scale, paper.advantage, paper.fill) == ("size", "critic", "mask")
    assert (paper.reward, paper.relevance) == ("sufficiency", "probability")
    assert (recipe.reward_scale, recipe.advantage, recipe.fill) == ("none", "loo", "drop")
    assert (deletion.reward, deletion.reward_scale, deletion.relevance) == (
        "deletion", "size", "logit",
    )  # fmt: skip
    assert {name: steps for name, (_, steps) in text.DEMO_FEX_RECIPES.items()} == {
        "fex": text.DEMO_FEX_STEPS, "fex_deletion": text.DEMO_FEX_DELETION_STEPS,
    }  # fmt: skip
    # Its training cost: K masks and K complements per sentence, plus the clean input.
    assert deletion.target_queries_per_step(4) == 4 * (1 + 2 * 16)


def test_page_and_table_show_every_method_and_the_intervals():
    tokens = ["[CLS]", "the", "movie", "was", "great", "[SEP]", "[PAD]"]
    values = [0.0, 0.1, 0.2, 0.3, 0.9, 0.0, 0.0]
    row = text_render.html_sentence(
        tokens, values, [False, False, False, False, True, False, False]
    )
    assert row.count("<span") == 4  # specials and padding are not shown
    assert 'class="ev" style="background:rgb(255,0,0)' in row  # the top token, underlined
    assert "rgb(255,255,255)" in row  # the lowest shown token (min-max scaled) is white
    from fastxai_jax.metrics.stats import paired_difference

    rows = [
        dict(method=m, deletion_auc=a, insertion_auc=i, pointing=p, token_f1=f,
             ms_per_sentence=1.0, forward_per_sentence=q, backward_per_sentence=0)
        for m, a, i, p, f, q in (("fex", 0.3, 0.7, 0.9, 0.8, 0), ("rise", 0.2, 0.6, 0.7, 0.6, 500))
    ]  # fmt: skip
    diff = paired_difference(np.array([0.3, 0.4, 0.2]), np.array([0.2, 0.2, 0.2]))
    table = text.format_table(rows, {"fex-rise:deletion_auc": diff})
    assert "| fex | 0.300 | 0.700 | 0.900 | 0.800 | 1.00 | 0+0 |" in table
    assert f"fex-rise:deletion_auc: {diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]" in table
    np.testing.assert_allclose(diff.mean, 0.1, atol=1e-9)


@pytest.mark.slow  # the minilm_classifier fixture (~1 min unless cached)
def test_text_section_refuses_a_cached_fex_of_another_recipe(minilm_classifier, tmp_path):
    from fastxai_jax.explainers.learned import fex_text, runs
    from fastxai_jax.explainers.learned._trained import Trained
    from fastxai_jax.models.minilm import load_minilm

    workdir, _, variables, fns, _ = minilm_classifier
    shutil.copytree(workdir, tmp_path / "text" / "classifier")
    module, encoder = load_minilm(num_classes=2)
    other = fex_text.TextFexConfig(num_classes=2, backbone_mode="frozen")  # the paper's reward
    learned = fex_text.make(other, fns, variables, module=module, backbone_params=encoder)
    params = fex_text.init_params(other, module, jax.random.key(0), encoder)
    runs.save(tmp_path / "text" / "fex", Trained("fex", learned, params, 2))
    with pytest.raises(ValueError, match="another recipe"):
        text.text_section(tmp_path / "text", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # the minilm_classifier fixture (~1 min unless cached)
def test_text_section_refuses_a_cached_fex_trained_against_another_classifier(
    minilm_classifier, tmp_path
):
    from fastxai_jax.explainers.learned import fex_text, runs
    from fastxai_jax.explainers.learned._trained import Trained
    from fastxai_jax.models.minilm import load_minilm

    _, _, variables, fns, _ = minilm_classifier
    module, encoder = load_minilm(num_classes=2)
    recipe = text.demo_fex_config()  # the demo's recipe, saved without its classifier ...
    learned = fex_text.make(recipe, fns, variables, module=module, backbone_params=encoder)
    params = fex_text.init_params(recipe, module, jax.random.key(0), encoder)
    trained = Trained("fex", learned, params, 2)
    runs.save(tmp_path / "a" / "fex", trained)
    # ... or against the default (linear) head instead of the demo's.
    runs.save(tmp_path / "b" / "fex", trained, {"target_options": {"num_steps": 1500}})
    for run in ("a", "b"):
        with pytest.raises(ValueError, match="against another classifier"):
            text.text_section(tmp_path / run, tmp_path / "out")
    assert not (tmp_path / "out").exists()
