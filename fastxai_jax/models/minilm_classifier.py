"""``minilm_classifier``: the frozen MiniLM encoder plus a linear head trained on
the embedded text benchmark (:mod:`fastxai_jax.data.text_benchmark`).

The encoder is frozen, so its mean-pooled sentence embeddings are computed once
(cached as ``embeddings.npz`` in ``workdir``) and the ``classifier`` head is
fitted on them with :func:`fastxai_jax.train.loop.fit` (checkpointed under
``workdir/head``, so an interrupted run resumes). Measured: 97.1% test accuracy
on 1000 held-out sentences (split seed 12345; 98.9% without negation, 94.3%
with), 1500 Adam steps, 56 s on 2 shared CPU cores, most of it the embeddings;
a resumed run takes 1.5 s.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fastxai_jax.data.text_benchmark import TextBenchmark, make_text_benchmark
from fastxai_jax.models.bert import BertClassifier
from fastxai_jax.models.minilm import load_minilm, load_tokenizer
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


def _cached_embeddings(workdir, module, variables, bench: TextBenchmark, tag: str) -> np.ndarray:
    if workdir is None:
        return embed_texts(module, variables, bench.input_ids, bench.attention_mask)
    cache = pathlib.Path(workdir) / f"embeddings_{tag}.npz"
    if cache.is_file():
        with np.load(cache) as saved:
            if np.array_equal(saved["input_ids"], bench.input_ids):
                return saved["embeddings"]
    embeddings = embed_texts(module, variables, bench.input_ids, bench.attention_mask)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, input_ids=bench.input_ids, embeddings=embeddings)
    return embeddings


def train_minilm_classifier(
    workdir: str | os.PathLike | None = None,
    *,
    num_train: int = 2000,
    num_steps: int = 1500,
    batch_size: int = 256,
    learning_rate: float = 1e-2,
    seed: int = 0,
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
      path: MiniLM model directory (default: the installed package).
      progress: show the progress bar.

    Returns:
      ``(module, variables)`` of ``minilm_classifier`` (2 classes, mean pooling).
    """
    module, variables = load_minilm(num_classes=2, path=path)
    bench = make_text_benchmark(num_train, load_tokenizer(path), seed=seed)
    features = jnp.asarray(_cached_embeddings(workdir, module, variables, bench, f"train{seed}"))
    labels = jnp.asarray(bench.labels)
    optimizer = optax.adam(learning_rate)
    state = init_state(variables["params"]["classifier"], optimizer)
    order_key = jax.random.key(seed)

    def batch_fn(step: int):
        rows = jax.random.choice(
            jax.random.fold_in(order_key, step), num_train, (batch_size,), replace=False
        )
        return features[rows], labels[rows]

    def update(state, batch, key):
        del key
        x, y = batch

        def loss_fn(head):
            logits = x @ head["kernel"] + head["bias"][None, :]
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state._replace(params=params, opt_state=opt_state), {"loss": loss}

    config = dict(num_train=num_train, batch_size=batch_size, lr=learning_rate, seed=seed)
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
    params = {**variables["params"], "classifier": jax.device_get(state.params)}
    return module, {"params": params}
