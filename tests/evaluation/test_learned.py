"""Learned-explainer training as a library: the recipe, its flags and the driver's checks."""

import dataclasses

import pytest

from fastxai_jax.cli import build_parser
from fastxai_jax.cli._args import recipe_from_args
from fastxai_jax.configs import demo
from fastxai_jax.configs.learned import LearnedRecipe, fex_config, optimizer_settings
from fastxai_jax.evaluation import train_explainer, trainable_methods


def _parse(argv):
    return build_parser().parse_args(
        ["train-explainer", "--method", "fex", "--workdir", "w", *argv]
    )


def test_cli_defaults_are_the_recipe_defaults():
    assert recipe_from_args(_parse([])) == LearnedRecipe()


@pytest.mark.parametrize("name", sorted(demo.LEARNED_RECIPES))
def test_demo_recipes_round_trip_through_their_flags(name):
    recipe = demo.learned_recipe(name)
    assert demo.LEARNED_RECIPES[name] == recipe.flags()
    assert recipe_from_args(_parse(recipe.flags())) == recipe
    assert demo.learned_recipe("fex", fex_steps=7).steps == 7


def test_recipe_fields_reach_the_method_config_and_optimizer():
    recipe = demo.fex_recipe().replace(lr=5e-4, steps=300)
    config = fex_config(recipe, num_classes=8, family="half")
    assert (config.num_masks, config.initial_keep, config.num_classes) == (10, 0.88, 8)
    assert config.patch_size == 4  # unset: fex_benchmark.BENCHMARK_DEFAULTS
    assert optimizer_settings("fex", recipe) == {
        "name": "adam", "lr": 5e-4, "warmup_frac": 0.05, "weight_decay": 0.0,
        "clip_norm": 1.0, "total_steps": 300,
    }  # fmt: skip
    ltx = optimizer_settings("ltx", LearnedRecipe(steps=10))
    assert (ltx["lr"], ltx["warmup_frac"], ltx["schedule"], ltx["total_steps"]) == (
        2e-3, 0.2, "constant", 10,
    )  # fmt: skip
    assert optimizer_settings("tve", LearnedRecipe(lr=3e-3))["lr"] == 3e-3


@pytest.mark.parametrize(
    "changes,name",
    [({"steps": 0}, "steps"), ({"batch_size": 2.5}, "batch_size"),
     ({"num_train": True}, "num_train"), ({"lr": float("nan")}, "lr"), ({"lr": 0.0}, "lr")],
)  # fmt: skip
def test_recipe_refuses_bad_fields_by_name(changes, name):
    with pytest.raises(ValueError, match=name):
        LearnedRecipe(**changes)


@pytest.mark.parametrize(
    "method,kwargs,name",
    [("nope", {}, "unknown method"), ("fex", {"recipe": {"steps": 3}}, "recipe"),
     ("fex", {"checkpoint_every": 0}, "checkpoint_every"), ("ltx", {"devices": 0}, "devices")],
)  # fmt: skip
def test_train_explainer_refuses_before_compute(tmp_path, method, kwargs, name):
    target = (None, None, "half", None)  # never touched: the checks come first
    with pytest.raises(ValueError, match=name):
        train_explainer(method, target, tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_trainable_methods_are_the_learned_table_and_dax():
    from fastxai_jax.explainers.registry import LEARNED_METHODS

    assert trainable_methods() == sorted([*LEARNED_METHODS, "dax"])
    assert {f.name for f in dataclasses.fields(LearnedRecipe)} >= {"steps", "num_masks", "dax_fill"}
