"""``minilm_classifier``: the frozen MiniLM encoder plus a head (linear, or an MLP) trained on
the embedded text benchmark (:mod:`fastxai_jax.data.text_benchmark`).

The encoder is frozen, so its mean-pooled sentence embeddings are computed once
(cached as ``embeddings.npz`` in ``workdir``) and the ``classifier`` head is
fitted on them with :func:`fastxai_jax.train.loop.fit` (checkpointed under
``workdir/head``, so an interrupted run resumes). Measured: 97.1% test accuracy
on 1000 held-out sentences (split seed 12345; 98.9% without negation, 94.3%
with), 1500 Adam steps, 56 s on 2 shared CPU cores, most of it the embeddings;
a resumed run takes 1.5 s.

That head answers an evidence-free input with near certainty (p(positive |
``[CLS] [SEP]``) = 0.9999; held-out sentences with their evidence removed:
mean p(positive) 0.754, median |p − 0.5| 0.421), so token deletion rewards
removing the distractors it leans on. ``null_fraction`` trains it ROAR-style
with evidence-free sentences labelled uniform (the text twin of the image
target's ``null_fraction``). A linear head cannot make every such sentence
uniform: with ``null_fraction=0.5, null_other=1.0, num_steps=3000`` it measures
95.9% on the same 1000 sentences (89.7% negated, 99.8% not), p(positive |
``[CLS] [SEP]``) 0.93, evidence-free mean 0.534 and median |p − 0.5| 0.144,
36% within 0.1 (a full-batch fit with null weight 3 reaches 54% at 95.0%
accuracy). Other linear variants (accuracy, evidence-free share within 0.1):
``null_fraction=0.25`` 97.0%, 30%; ``0.5`` (3000 steps) 96.8%, 42%; ``0.25,
null_other=1.0`` 97.5%, 29%; ``0.75, null_other=1.0`` 93.4% (below the 95% bar),
55%.

``head_hidden > 0`` replaces the linear head by an MLP
(:class:`~fastxai_jax.models.bert.MLPHead`), still fitted on the cached
embeddings. The demo's choice
(:data:`fastxai_jax.evaluation.text.DEMO_CLASSIFIER`: the options above plus
``head_hidden=256``) measures 99.6% (99.0% negated, 100% not), evidence-free
96.4% within 0.1 of 0.5 (mean 0.487, median |p − 0.5| 0.019; with a share U[0,
1] of the other tokens also dropped: 98.4%), p(positive | ``[CLS] [SEP]``) 0.70
(never trained on); training it fresh and scoring 1000 sentences takes 60 s on 2
shared CPU cores (the slow test). Sweeps of the MLP on the same cached
embeddings (a scratch fit, tanh-approximate GELU, 3000 Adam steps unless said,
``null_fraction=0.5, null_other=1.0``; accuracy, evidence-free share within
0.1): width 256, lr 1e-3 99.9%, 64%; lr 3e-3 99.9%, 82% (6000 steps: 94%); lr 1e-2 (this
choice) 99.7%, 97%; width 64 or 1024 at lr 3e-3 99.9%, 81% / 84%;
``null_fraction=0.75`` at lr 3e-3 99.9%, 85%; ReLU at lr 1e-3 99.8%, 76%.
"""

from __future__ import annotations

import functools
import inspect
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fastxai_jax.data.text_benchmark import TextBenchmark, drop_tokens, make_text_benchmark
from fastxai_jax.models.bert import BertClassifier, MLPHead
from fastxai_jax.models.minilm import load_minilm, load_tokenizer, special_tokens
from fastxai_jax.train.loop import fit, init_state


def embed_texts(
    module: BertClassifier, variables: dict, input_ids: Any, attention_mask: Any, chunk: int = 256
) -> np.ndarray:
    """Sentence embeddings ``[N, D]`` of token ids, ``chunk`` sentences per call."""
    run = jax.jit(lambda v, ids, m: module.apply(v, ids, attention_mask=m)[1]["pooled"])
    out = [
        np.asarray(run(variables, input_ids[i : i + chunk], attention_mask[i : i + chunk]))
        for i in range(0, len(input_ids), chunk)
    ]
    return np.concatenate(out)


def predict(module: BertClassifier, variables: dict, bench: TextBenchmark, chunk: int = 256):
    """Predicted labels ``[N]`` of a benchmark split."""
    run = jax.jit(lambda v, ids, m: module.apply(v, ids, attention_mask=m)[0])
    logits = [
        np.asarray(
            run(variables, bench.input_ids[i : i + chunk], bench.attention_mask[i : i + chunk])
        )
        for i in range(0, len(bench.labels), chunk)
    ]
    return np.argmax(np.concatenate(logits), axis=-1)


def _cached_embeddings(workdir, module, variables, input_ids, attention_mask, tag: str):
    """Embeddings of ``input_ids``, reused from ``workdir`` when the same ids and mask were
    embedded before."""
    if workdir is None:
        return embed_texts(module, variables, input_ids, attention_mask)
    cache = pathlib.Path(workdir) / f"embeddings_{tag}.npz"
    if cache.is_file():
        with np.load(cache) as saved:
            same_ids = np.array_equal(saved["input_ids"], input_ids)
            old = "attention_mask" not in saved  # saved before null inputs: ids decide it
            if same_ids and (old or np.array_equal(saved["attention_mask"], attention_mask)):
                return saved["embeddings"]
    embeddings = embed_texts(module, variables, input_ids, attention_mask)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, input_ids=input_ids, attention_mask=attention_mask, embeddings=embeddings)
    return embeddings


def train_minilm_classifier(
    workdir: str | os.PathLike | None = None,
    *,
    num_train: int = 2000,
    num_steps: int = 1500,
    batch_size: int = 256,
    learning_rate: float = 1e-2,
    seed: int = 0,
    null_fraction: float = 0.0,
    null_other: float = 0.0,
    drop_fraction: float = 0.0,
    head_hidden: int = 0,
    path: str | os.PathLike | None = None,
    progress: bool = False,
) -> tuple[BertClassifier, dict]:
    """Trains the benchmark head on the frozen MiniLM encoder.

    Args:
      workdir: where embeddings and head checkpoints are cached (``None``: nothing saved).
      num_train: training sentences (benchmark split ``seed``).
      num_steps: Adam steps on minibatches of cached embeddings.
      batch_size: sentences per step.
      learning_rate: Adam learning rate.
      seed: the training split's seed and the minibatch order.
      null_fraction: share of each minibatch taken from the training sentences with
        their evidence removed (:func:`~fastxai_jax.data.text_benchmark.drop_tokens`,
        the token metrics' ``fill="drop"``), labelled uniform (soft target 0.5/0.5),
        so that a sentence without evidence means "no class" (ROAR-style; the
        text twin of the image target's ``null_fraction``). 0: off.
      null_other: each null sentence also loses a share ``U[0, null_other]`` of its
        other content tokens.
      drop_fraction: share of each minibatch taken from the training sentences with
        their evidence kept and a share ``U[0, 1]`` of their other content tokens
        removed, with their own label (the head learns that distractors decide
        nothing). 0: off.
      head_hidden: 0 = the linear ``classifier`` head; ``> 0`` = an
        :class:`~fastxai_jax.models.bert.MLPHead` of that width (``head`` in the
        param tree; its hidden layer starts from :func:`load_minilm`'s init).
      path: MiniLM model directory (default: the installed package).
      progress: show the progress bar.

    Returns:
      ``(module, variables)`` of ``minilm_classifier`` (2 classes, mean pooling).
    """
    if isinstance(head_hidden, bool) or not isinstance(head_hidden, int) or head_hidden < 0:
        raise ValueError(f"head_hidden must be a non-negative int; got {head_hidden!r}")
    if not 0.0 <= float(null_fraction) < 1.0:
        raise ValueError(f"null_fraction must lie in [0, 1); got {null_fraction!r}")
    if not 0.0 <= float(null_other) <= 1.0:
        raise ValueError(f"null_other must lie in [0, 1]; got {null_other!r}")
    if not 0.0 <= float(drop_fraction) < 1.0:
        raise ValueError(f"drop_fraction must lie in [0, 1); got {drop_fraction!r}")
    num_null = int(round(float(null_fraction) * batch_size))
    num_drop = int(round(float(drop_fraction) * batch_size))
    for name, share, rows in (
        ("null_fraction", null_fraction, num_null),
        ("drop_fraction", drop_fraction, num_drop),
    ):
        if share > 0 and not 0 < rows < batch_size:
            raise ValueError(
                f"{name}: {share} of batch_size {batch_size} rounds to {rows} rows; "
                f"need between 1 and {batch_size - 1}"
            )
    if num_null + num_drop >= batch_size:
        raise ValueError(
            f"null_fraction + drop_fraction must leave original sentences in the batch; got "
            f"{null_fraction} + {drop_fraction}"
        )
    module, variables = load_minilm(num_classes=2, path=path, head_hidden=head_hidden)
    head_name = "head" if head_hidden else "classifier"
    bench = make_text_benchmark(num_train, load_tokenizer(path), seed=seed)
    embed = functools.partial(_cached_embeddings, workdir, module, variables)
    features = jnp.asarray(embed(bench.input_ids, bench.attention_mask, f"train{seed}"))
    targets = jax.nn.one_hot(jnp.asarray(bench.labels), 2)
    mask_id = special_tokens(load_tokenizer(path)).mask
    pools = []  # (features, targets, rows per batch) of each augmentation
    if num_null:
        null_ids, null_mask = drop_tokens(bench, mask_id, other_fraction=null_other, seed=seed)
        null_x = embed(null_ids, null_mask, f"null{seed}_{null_other:g}")
        pools.append((jnp.asarray(null_x), jnp.full((num_train, 2), 0.5), num_null))
    if num_drop:
        drop_ids, drop_mask = drop_tokens(
            bench, mask_id, evidence=False, other_fraction=1.0, seed=seed
        )
        pools.append((jnp.asarray(embed(drop_ids, drop_mask, f"drop{seed}")), targets, num_drop))
    optimizer = optax.adam(learning_rate)
    state = init_state(variables["params"][head_name], optimizer)
    order_key = jax.random.key(seed)

    def batch_fn(step: int):
        step_key = jax.random.fold_in(order_key, step)
        if not pools:
            rows = jax.random.choice(step_key, num_train, (batch_size,), replace=False)
            return features[rows], targets[rows]
        keys = jax.random.split(step_key, 1 + len(pools))
        rows = jax.random.choice(
            keys[0], num_train, (batch_size - num_null - num_drop,), replace=False
        )
        xs, ys = [features[rows]], [targets[rows]]
        for pool_key, (x, y, count) in zip(keys[1:], pools, strict=True):
            pool_rows = jax.random.choice(pool_key, num_train, (count,), replace=False)
            xs.append(x[pool_rows])
            ys.append(y[pool_rows])
        return jnp.concatenate(xs), jnp.concatenate(ys)

    def update(state, batch, key):
        del key
        x, y = batch

        def loss_fn(head):
            if head_hidden:
                logits = MLPHead(head_hidden, 2).apply({"params": head}, x)
            else:
                logits = x @ head["kernel"] + head["bias"][None, :]
            return jnp.mean(optax.softmax_cross_entropy(logits, y))

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state._replace(params=params, opt_state=opt_state), {"loss": loss}

    config = _head_config(
        num_train=num_train,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        null_fraction=null_fraction if num_null else 0.0,
        null_other=null_other,
        drop_fraction=drop_fraction if num_drop else 0.0,
        head_hidden=head_hidden,
    )
    state, _ = fit(
        state,
        update,
        batch_fn,
        num_steps=num_steps,
        key=jax.random.key(seed),
        checkpoint_dir=None if workdir is None else pathlib.Path(workdir).resolve() / "head",
        checkpoint_every=500,
        progress=progress,
        config=config,
    )
    params = {**variables["params"], head_name: jax.device_get(state.params)}
    return module, {"params": params}


def _head_config(
    *,
    num_train: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    null_fraction: float,
    null_other: float,
    drop_fraction: float,
    head_hidden: int,
    **_: Any,
) -> dict[str, Any]:
    """The JSON config a head is saved with (the options that shape it; ``num_steps``,
    ``path`` and ``progress`` do not). Options that are off are absent, so that heads
    saved before they existed still resume."""
    config = dict(num_train=num_train, batch_size=batch_size, lr=learning_rate, seed=seed)
    if null_fraction:
        config.update(null_fraction=float(null_fraction), null_other=float(null_other))
    if drop_fraction:
        config.update(drop_fraction=float(drop_fraction))
    if head_hidden:
        config.update(head_hidden=int(head_hidden))
    return config


def saved_options(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """The :func:`train_minilm_classifier` options of the head saved in ``workdir``
    (``num_steps``: its latest saved step), or ``None`` when none is saved."""
    from fastxai_jax.train.checkpoint import Checkpointer

    head = pathlib.Path(workdir).resolve() / "head"
    if not head.is_dir():
        return None
    checkpointer = Checkpointer(head)
    step = checkpointer.latest_step()
    if step is None:
        return None
    config = checkpointer.restore_config(step) or {}
    options = {("learning_rate" if k == "lr" else k): v for k, v in config.items()}
    return {**options, "num_steps": int(step)}


def load_or_train(
    workdir: str | os.PathLike | None, recipe: dict[str, Any]
) -> tuple[BertClassifier, dict]:
    """The classifier saved in ``workdir`` as it is, whatever options trained it;
    without one (or with ``recipe``'s own, unfinished), trains ``recipe`` there.

    A head saved with other options is loaded at its latest step, never trained
    further, so a user's weights directory is not changed.
    """
    saved = None if workdir is None else saved_options(workdir)
    if saved is not None:
        defaults = {
            name: option.default
            for name, option in inspect.signature(train_minilm_classifier).parameters.items()
            if option.kind is inspect.Parameter.KEYWORD_ONLY
        }
        if _head_config(**{**defaults, **saved}) != _head_config(**{**defaults, **recipe}):
            return train_minilm_classifier(workdir, **saved)  # another head: as saved
    return train_minilm_classifier(workdir, **recipe)  # trains, or resumes an unfinished run
