"""The demo's text section: token methods on the embedded text benchmark (issue 21).

:func:`text_table` explains held-out benchmark sentences with trained FEX over
tokens (one row per recipe of :data:`DEMO_FEX_RECIPES`), RISE over tokens, IG,
Saliency and a random map, and scores each with token deletion and insertion AUC
(the FEX paper's protocol for text, ``fill="drop"``: see
:mod:`fastxai_jax.metrics.tokens` for why not [MASK]), the token pointing game
and token-F1 against the planted evidence, the measured ms per sentence and the
target queries per sentence. Each FEX row's paired differences against RISE and
random come with 95% bootstrap intervals
(:func:`fastxai_jax.metrics.paired_difference`). The recipes, the classifier's
options and :func:`train_text_fex` live in :mod:`.text_recipes` (re-exported).
:mod:`fastxai_jax.evaluation.text_render` draws the highlighted sentences
(:func:`~fastxai_jax.evaluation.text_render.text_page` puts the methods' maps on one
HTML page).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from fastxai_jax.evaluation.text_recipes import (  # noqa: F401 (re-exported)
    DEMO_CLASSIFIER,
    DEMO_FEX_BATCH,
    DEMO_FEX_DELETION_STEPS,
    DEMO_FEX_LR,
    DEMO_FEX_RECIPES,
    DEMO_FEX_STEPS,
    demo_fex_config,
    demo_fex_deletion_config,
    train_text_fex,
)
from fastxai_jax.evaluation.text_render import text_page
from fastxai_jax.explainers import registry
from fastxai_jax.explainers.tokens import content_mask
from fastxai_jax.metrics.stats import paired_difference
from fastxai_jax.metrics.tokens import token_f1, token_insertion_deletion, token_pointing_game


def _timed(fn: Callable[[Any], Any], x: Any, num_timed: int) -> tuple[np.ndarray, float]:
    """``(fn(x), seconds per sentence)``: ``fn`` runs untimed on chunks of
    ``num_timed`` sentences (IG over 64 sentences × 50 steps at once does not fit
    in memory), then is timed on the first chunk (compiled by then)."""
    out = np.concatenate(
        [
            np.asarray(jax.block_until_ready(fn(tuple(a[i : i + num_timed] for a in x))))
            for i in range(0, len(x[0]), num_timed)
        ]
    )
    part = tuple(a[:num_timed] for a in x)
    jax.block_until_ready(fn(part))  # compile the timed shape
    tic = time.perf_counter()
    jax.block_until_ready(fn(part))
    return out, (time.perf_counter() - tic) / len(part[0])


def text_table(
    fns: Any,
    params: Any,
    bench: Any,
    learned: Any,
    *,
    key: jax.Array,
    rise_masks: int = 500,
    ig_steps: int = 50,
    num_steps: int = 10,
    num_timed: int = 8,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, np.ndarray]]:
    """The text section's table on a benchmark split (one batch: ``bench`` holds all).

    Args:
      fns, params: the text target (``bert_text_fns(module)``, its variables).
      bench: a :class:`~fastxai_jax.data.text_benchmark.TextBenchmark` split.
      learned: trained FEX over tokens: one ``runs.Trained`` (the row ``"fex"``), a
        dict of them by row name (each explained through the ``"fex"`` method), or
        ``None`` to skip them.
      key: PRNG key of RISE and the random map.
      rise_masks, ig_steps: RISE masks, IG steps.
      num_steps: insertion/deletion-curve fractions.
      num_timed: sentences of the timed call (ms per sentence; the maps come
        from one untimed call on all sentences, so RISE's 500 masks run once).

    Returns:
      ``(rows, intervals, maps)``: one row per method (token deletion and
      insertion AUC, pointing, token-F1, ms per sentence, forward/backward
      queries per sentence, and deletion AUC on the negated and the other
      sentences apart: deleting a negator flips an accurate classifier), the
      paired ``<learned row> − rise`` / ``− random`` intervals of each score,
      and the ``[N, T]`` attributions by method.
    """
    ids, mask = bench.input_ids, bench.attention_mask
    x = (ids, mask)
    content = np.asarray(content_mask(fns, ids, mask))
    if learned is not None and not isinstance(learned, dict):
        learned = {"fex": learned}
    methods: dict[str, tuple[str, Callable[[Any], Any], dict[str, Any]]] = {
        name: (
            "fex",
            lambda x, trained=trained: registry.attribute("fex", fns, params, x, explainer=trained),
            {},
        )
        for name, trained in (learned or {}).items()
    }
    methods |= {
        "rise": (
            "rise",
            lambda x: registry.attribute(
                "rise", fns, params, x, key=key, num_masks=rise_masks, fill="drop", chunk_size=20
            ),
            {"num_masks": rise_masks},
        ),
        "integrated_gradients": (
            "integrated_gradients",
            lambda x: registry.attribute(
                "integrated_gradients", fns, params, x, num_steps=ig_steps, batch_size=ig_steps
            ),
            {"num_steps": ig_steps},
        ),
        "saliency": ("saliency", lambda x: registry.attribute("saliency", fns, params, x), {}),
        "random": ("random", lambda x: registry.attribute("random", fns, params, x, key=key), {}),
    }
    negated = np.asarray(bench.negated, bool)
    rows, maps, scores = [], {}, {}
    for name, (method, fn, options) in methods.items():
        attribution, seconds = _timed(fn, x, num_timed)
        aucs = {
            f"{mode}_auc": np.asarray(
                token_insertion_deletion(
                    fns, params, ids, mask, attribution, mode=mode, num_steps=num_steps,
                    fill="drop",
                )[1]
            )
            for mode in ("deletion", "insertion")
        }  # fmt: skip
        cost = registry.token_method_cost(method, **options)
        maps[name] = attribution
        scores[name] = {
            **aucs,
            "pointing": np.asarray(token_pointing_game(attribution, bench.evidence, content)),
            "token_f1": np.asarray(token_f1(attribution, bench.evidence, content)),
        }
        rows.append(
            {
                "method": name,
                **{metric: float(v.mean()) for metric, v in scores[name].items()},
                "deletion_auc_negated": float(aucs["deletion_auc"][negated].mean()),
                "deletion_auc_plain": float(aucs["deletion_auc"][~negated].mean()),
                "ms_per_sentence": 1000.0 * seconds,
                "forward_per_sentence": cost.forward,
                "backward_per_sentence": cost.backward,
            }
        )
    intervals = {
        f"{name}-{other}:{metric}": paired_difference(scores[name][metric], scores[other][metric])
        for name in learned or {}
        for other in ("rise", "random")
        for metric in METRICS
    }
    return rows, intervals, maps


METRICS = ("deletion_auc", "insertion_auc", "pointing", "token_f1")
"""The table's per-sentence scores: token deletion AUC (lower is better), token
insertion AUC, the pointing game and token-F1 (higher is better)."""


def format_table(rows: Sequence[dict[str, Any]], intervals: dict[str, Any]) -> str:
    """Markdown table of :func:`text_table`'s rows plus the paired intervals."""
    lines = [
        "| method | deletion AUC ↓ | insertion AUC ↑ | pointing ↑ | token-F1 ↑ | ms/sentence "
        "| queries (fwd+bwd) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} | "
            f"{r['pointing']:.3f} | {r['token_f1']:.3f} | {r['ms_per_sentence']:.2f} | "
            f"{r['forward_per_sentence']}+{r['backward_per_sentence']} |"
        )
    if all("deletion_auc_negated" in r for r in rows):
        lines += ["", "| method | deletion AUC, negated sentences | deletion AUC, the others |",
                  "|---|---|---|"]  # fmt: skip
        for r in rows:
            lines.append(
                f"| {r['method']} | {r['deletion_auc_negated']:.3f} | "
                f"{r['deletion_auc_plain']:.3f} |"
            )
    for name, diff in intervals.items():
        lines.append(
            f"\n{name}: {diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}] (95% paired bootstrap)"
        )
    return "\n".join(lines)


def _cached_fex(workdir, name, recipe, fns, module) -> Any:
    """The demo's saved FEX run ``workdir/name`` if it was trained with ``recipe``
    against :data:`DEMO_CLASSIFIER`; ``None`` when absent; refused otherwise."""
    from fastxai_jax.explainers.learned import runs
    from fastxai_jax.train.checkpoint import Checkpointer

    run = workdir / name
    if not (run / "explainer").exists():
        return None
    trained = runs.load(run, fns=fns, module=module)
    if trained.explainer.config != recipe:
        raise ValueError(
            f"workdir {workdir} holds a text FEX trained with another recipe "
            f"({trained.explainer.config}); delete {run} to retrain"
        )
    saved = Checkpointer(run / "explainer").restore_config() or {}
    if saved.get("target_options") != DEMO_CLASSIFIER:
        raise ValueError(
            f"workdir {workdir}: its text FEX was trained against another classifier "
            f"({saved.get('target_options', 'the linear head of an earlier version')}); "
            f"delete {run} and {workdir / 'classifier'} to retrain"
        )
    return trained


def text_section(
    workdir: Any,
    out: Any,
    *,
    num_test: int = 64,
    rise_masks: int = 500,
    ig_steps: int = 50,
) -> str:
    """Runs the demo's text section end to end and writes ``out/text.md``, ``out/text.html``.

    ``workdir`` caches the classifier head (``classifier/``, trained with
    :data:`DEMO_CLASSIFIER`; a head saved with other options is refused) and
    one FEX run per recipe of :data:`DEMO_FEX_RECIPES` (``fex/``,
    ``fex_deletion/``). A saved run trained with its recipe against this
    classifier is reused as is; one saved with another config or against another
    classifier is refused (delete it, and ``classifier/`` too in the second
    case). Returns the markdown table.
    """
    import pathlib

    from fastxai_jax.data.text_benchmark import make_text_benchmark
    from fastxai_jax.explainers.tokens import bert_text_fns
    from fastxai_jax.models.minilm import load_minilm, load_tokenizer, special_tokens
    from fastxai_jax.models.minilm_classifier import train_minilm_classifier

    workdir, out = pathlib.Path(workdir), pathlib.Path(out)
    tokenizer = load_tokenizer()
    special = special_tokens(tokenizer)
    module = load_minilm(num_classes=2)[0]  # the explainer transformer
    target = module.clone(head_hidden=DEMO_CLASSIFIER.get("head_hidden", 0))
    fns = bert_text_fns(target, special.mask, (special.cls, special.sep))
    # Saved FEX runs are checked first, so that a refusal costs no training.
    learned = {
        name: _cached_fex(workdir, name, recipe(), fns, module)
        for name, (recipe, _) in DEMO_FEX_RECIPES.items()
    }
    # A head saved with other options than DEMO_CLASSIFIER is refused (fit's config check).
    _, variables = train_minilm_classifier(workdir / "classifier", **DEMO_CLASSIFIER)
    train = make_text_benchmark(512, tokenizer, seed=1)
    test = make_text_benchmark(num_test, tokenizer, seed=4242)
    for name, (recipe, steps) in DEMO_FEX_RECIPES.items():
        if learned[name] is None:
            learned[name] = train_text_fex(
                fns, variables, train, workdir=workdir / name, num_steps=steps, config=recipe(),
                target_options=DEMO_CLASSIFIER,
            )  # fmt: skip
    rows, intervals, maps = text_table(
        fns, variables, test, learned, key=jax.random.key(0), rise_masks=rise_masks,
        ig_steps=ig_steps,
    )  # fmt: skip
    table = format_table(rows, intervals)
    out.mkdir(parents=True, exist_ok=True)
    (out / "text.md").write_text(table + "\n", encoding="utf-8")
    (out / "text.html").write_text(text_page(tokenizer, test, maps), encoding="utf-8")
    return table
