"""FEX over tokens vs RISE over tokens vs IG(50) on the text benchmark (issue 21).

Not a test: one run, JSON out. Per method: ms per sentence (compilation
excluded, one timed batch call), target queries per sentence (forward +
backward, from ``registry.token_method_cost``) and peak memory as XLA's
compiled estimate (arguments + outputs + temporaries) of the jitted call. The
explainer's cost does not depend on its weights, so FEX (the demo's recipe,
``evaluation.text.demo_fex_config``) is timed freshly initialised from MiniLM
unless ``--fex-workdir`` names a trained run (e.g. the demo's ``runs/demo/text/fex``).
RISE drops masked tokens from the attention, as in the demo's text table.

Command::

  python experiments/benchmarks/bench_text.py --workdir runs/demo/text \
      --fex-workdir runs/demo/text/fex --num 16 --repeats 1 --out bench_text.json

Measured (the demo's classifier and trained FEX, 16 sentences padded to 27
tokens, 2 idle CPU cores, 66 s): FEX 1.78 ms per sentence, RISE-500 1283 ms
(719×), IG-50 347 ms (195×); target queries 0, 500 and 50 + 50; compiled
memory 98 MB, 341 MB (3.5×) and 5.92 GB (60×). IG's single call over 64
sentences needs about 24 GB and was killed for memory on a 24 GB machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # also when loaded by path
from _bench_common import peak_bytes as _peak_bytes  # noqa: E402

from fastxai_jax.configs.text import CLASSIFIER  # noqa: E402
from fastxai_jax.data.text_benchmark import make_text_benchmark  # noqa: E402
from fastxai_jax.evaluation.text import demo_fex_config  # noqa: E402
from fastxai_jax.explainers import registry, tokens  # noqa: E402
from fastxai_jax.explainers.learned import fex_text, runs  # noqa: E402
from fastxai_jax.models.minilm import load_minilm, load_tokenizer, special_tokens  # noqa: E402
from fastxai_jax.models.minilm_classifier import train_minilm_classifier  # noqa: E402


def _time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    tic = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn())
    return (time.perf_counter() - tic) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="runs/text", help="classifier cache (classifier/)")
    parser.add_argument("--fex-workdir", default=None, help="a trained FEX-over-tokens run")
    parser.add_argument("--num", type=int, default=64, help="sentences")
    parser.add_argument("--rise-masks", type=int, default=500)
    parser.add_argument("--rise-chunk", type=int, default=20, help="masks per target call")
    parser.add_argument("--ig-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="bench_text.json")
    args = parser.parse_args()

    # The demo's classifier recipe (configs/text.py), so the demo's workdir is reused as is.
    module, variables = train_minilm_classifier(
        pathlib.Path(args.workdir) / "classifier", **CLASSIFIER
    )
    tokenizer = load_tokenizer()
    special = special_tokens(tokenizer)
    fns = tokens.bert_text_fns(module, special.mask, (special.cls, special.sep))
    bench = make_text_benchmark(args.num, tokenizer, seed=4242)
    ids, mask = bench.input_ids, bench.attention_mask
    encoder, encoder_params = load_minilm(num_classes=2)
    if args.fex_workdir:
        trained = runs.load(args.fex_workdir, fns=fns, module=encoder)
        learned, fex_params = trained.explainer, trained.params
    else:
        config = demo_fex_config()
        learned = fex_text.make(
            config, fns, variables, module=encoder, backbone_params=encoder_params
        )
        fex_params = learned.init_params(jax.random.key(0), (ids[:2], mask[:2]))
    content = tokens.content_mask(fns, ids, mask)
    key = jax.random.key(0)
    methods = {
        "fex": (
            lambda: learned.explain(fex_params, (ids, mask)),
            lambda p, i, m, c: fex_text._explain_jit(learned.config, encoder, p, i, m, c, None),
            (fex_params, ids, mask, content),
            {},
        ),
        "rise": (
            lambda: tokens.token_rise(
                fns,
                variables,
                ids,
                mask,
                key=key,
                num_masks=args.rise_masks,
                chunk_size=args.rise_chunk,
                fill="drop",
            ),
            lambda p, i, m: tokens.token_rise(
                fns,
                p,
                i,
                m,
                key=key,
                num_masks=args.rise_masks,
                chunk_size=args.rise_chunk,
                fill="drop",
            ),
            (variables, ids, mask),
            {"num_masks": args.rise_masks},
        ),
        "integrated_gradients": (
            lambda: tokens.token_integrated_gradients(
                fns, variables, ids, mask, num_steps=args.ig_steps, batch_size=args.ig_steps
            ),
            lambda p, i, m: tokens.token_integrated_gradients(
                fns, p, i, m, num_steps=args.ig_steps, batch_size=args.ig_steps
            ),
            (variables, ids, mask),
            {"num_steps": args.ig_steps},
        ),
    }
    results = {}
    for name, (call, pure, pure_args, options) in methods.items():
        seconds = _time(call, args.repeats)
        cost = registry.token_method_cost(name, **options)
        results[name] = {
            "ms_per_sentence": 1000.0 * seconds / args.num,
            "forward_per_sentence": cost.forward,
            "backward_per_sentence": cost.backward,
            "peak_bytes": _peak_bytes(pure, *pure_args),
        }
        print(name, results[name], flush=True)
    fex = results["fex"]
    for name in ("rise", "integrated_gradients"):
        results[f"speedup_fex_vs_{name}"] = (
            results[name]["ms_per_sentence"] / fex["ms_per_sentence"]
        )
        if fex["peak_bytes"] and results[name]["peak_bytes"]:
            results[f"memory_ratio_{name}_over_fex"] = (
                results[name]["peak_bytes"] / fex["peak_bytes"]
            )
    results["setup"] = {
        "num_sentences": args.num,
        "padded_length": int(ids.shape[1]),
        "backend": jax.default_backend(),
        "fex_trained": bool(args.fex_workdir),
    }
    pathlib.Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if "ratio" in k or "speedup" in k}))


if __name__ == "__main__":
    main()
