"""Prints the parity table: method × component × max relative difference.

Runs fastxai_jax (float64) on the committed references in
``tests/fixtures/parity/`` (made by ``make_references.py`` from the MFABA
authors' code and torch autograd) and prints, per method and option set,
``max |ours − reference| / max |reference|``; then the DAX, FEX, LTX and TVE
rows (float32) from the ``parity_rows()`` of their tests in ``tests/parity/``
(references made by ``dax_refs.py``, ``fex_refs.py``, ``ltx_refs.py`` and
``tve_refs.py`` from the authors' code). With ``--resnet18 PATH`` (the
shared ``torchvision_resnet18.safetensors``) it adds the 224² astronaut rows:
our float32 / float64 saliency against torch autograd in the same precision,
and torch float32 against torch float64.

    python experiments/parity/table.py \\
        [--resnet18 ../shared/fixtures/torchvision_resnet18.safetensors]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "parity")]

from _refs import FIXTURES, load, relative  # noqa: E402

from fastxai_jax.explainers import boundary, gradients, mfaba  # noqa: E402


def rows():
    """``(method, component, reference, difference)`` tuples."""
    f, v, x, t, maps = load()
    ig = gradients.integrated_gradients
    agi_opts = dict(from_original=True, batch_coupling=True, false_class=int(maps["agi_class"]))
    runs = [
        (
            "Saliency",
            "map",
            "torch autograd",
            "sm",
            lambda: gradients.saliency(f, v, x, t, absolute=False, per_channel=True),
        ),
        (
            "IG",
            "map, method=captum_trapezoid",
            "authors (Captum)",
            "ig",
            lambda: ig(f, v, x, t, method="captum_trapezoid", per_channel=True),
        ),
        (
            "IG",
            "map, method=riemann_trapezoid (clean)",
            "authors (Captum)",
            "ig",
            lambda: ig(f, v, x, t, method="riemann_trapezoid", per_channel=True),
        ),
    ]
    for variant in ("sharp", "smooth"):
        for acc in (True, False):
            label = "accumulate_gradients=True" if acc else "clean (default)"
            runs.append(
                (
                    f"MFABA-{variant.upper()}",
                    f"batched map, {label}",
                    "authors",
                    f"mfaba_{variant}",
                    lambda variant=variant, acc=acc: mfaba.mfaba(
                        f, v, x, t, variant=variant, accumulate_gradients=acc, per_channel=True
                    ),
                )
            )
    for variant in ("norm", "cos"):
        runs.append(
            (
                f"MFABA-{variant.upper()}",
                "map (default)",
                "authors",
                f"mfaba_{variant}",
                lambda variant=variant: mfaba.mfaba(f, v, x, t, variant=variant, per_channel=True),
            )
        )
    runs += [
        (
            "BIG",
            "map, accumulate_gradients + captum_trapezoid",
            "authors",
            "big",
            lambda: boundary.big(
                f,
                v,
                x,
                t,
                accumulate_gradients=True,
                ig_method="captum_trapezoid",
                per_channel=True,
            ),
        ),
        (
            "BIG",
            "map, clean (default)",
            "authors",
            "big",
            lambda: boundary.big(f, v, x, t, per_channel=True),
        ),
        (
            "AGI",
            "batched map, batch_coupling=True",
            "authors",
            "agi",
            lambda: boundary.agi(f, v, x, t, key=None, per_channel=True, **agi_opts),
        ),
        (
            "AGI",
            "map of a batch of one, batch_coupling=True",
            "authors (batch of 4)",
            "agi",
            lambda: jnp.concatenate(
                [
                    boundary.agi(
                        f, v, x[i : i + 1], t[i : i + 1], key=None, per_channel=True, **agi_opts
                    )
                    for i in range(4)
                ]
            ),
        ),
    ]
    for method, component, ref, key, run in runs:
        yield method, component, ref, relative(run(), maps[key])
    yield (
        "Saliency",
        "torch float32 vs float64",
        "torch autograd",
        relative(maps["sm_float32"], maps["sm"]),
    )


def resnet18_rows(path):
    """Saliency on the 224² astronaut with the shared ResNet-18 weights."""
    from skimage import data, transform

    from fastxai_jax.models import convert
    from fastxai_jax.models.normalization import normalise

    ref = np.load(FIXTURES / "resnet18_astronaut.npz")
    state = convert.load_state_dict(path)
    module = convert.resnet_module_for(state, 18)
    image = transform.resize(data.astronaut(), (224, 224), anti_aliasing=True).astype(np.float32)[
        None
    ]
    target = int(ref["target"])
    for name, dtype in (("float32", jnp.float32), ("float64", jnp.float64)):
        variables = jax.tree.map(
            lambda a, dtype=dtype: jnp.asarray(a, dtype),
            convert.convert_torchvision_resnet(state, 18),
        )
        grad = jax.grad(
            lambda xs, variables=variables: module.apply(variables, normalise(xs))[0][0, target]
        )(jnp.asarray(image, dtype))
        yield (
            "Saliency (ResNet-18, astronaut 224²)",
            f"{name}, ours vs torch",
            "torch autograd",
            relative(grad[0], ref[name][0]),
        )
    yield (
        "Saliency (ResNet-18, astronaut 224²)",
        "torch float32 vs torch float64",
        "torch autograd",
        relative(ref["float32"], ref["float64"]),
    )


# The learned and per-input methods whose parity tests carry a ``parity_rows()``
# table (component -> max relative difference to the authors' code, float32).
LEARNED_TABLES = (("DAX", "test_dax_parity"), ("FEX", "test_fex_parity"),
                  ("LTX", "test_ltx_parity"), ("TVE", "test_tve_parity"))  # fmt: skip


def learned_rows():
    """``(method, component, reference, difference)`` from each parity test module."""
    import importlib

    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
    for method, module_name in LEARNED_TABLES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        for component, diff in module.parity_rows().items():
            yield method, component, "authors", float(diff)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resnet18", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    print("| method | component | reference | max rel. diff |")
    print("|---|---|---|---|")
    with jax.enable_x64(True):
        table = list(rows())
        if args.resnet18 is not None:
            table += list(resnet18_rows(args.resnet18))
    table += list(learned_rows())
    for method, component, ref, diff in table:
        print(f"| {method} | {component} | {ref} | {diff:.1e} |")


if __name__ == "__main__":
    main()
