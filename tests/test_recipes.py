"""Every recipe parses through swift's own argument classes (no model download, no GPU): a renamed or
misspelt option, or a value outside an option's choices, fails here rather than on a user's cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT

RECIPES = sorted((REPO_ROOT / "recipes").glob("*.yaml"))
#: environment variables moon reads (recipes set them in ENV), plus swift's launcher variables
KNOWN_ENV = {
    "NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "INFONCE_TEMPERATURE",
    "MOON_INFONCE_TEMPERATURE", "MOON_INFONCE_SPATIAL", "MOON_INFONCE_QUEUE_SIZE", "MOON_INFONCE_QUEUE_MAX_AGE",
    "MOON_INFONCE_QUEUE_NEGATIVES", "MOON_INFONCE_QUEUE_START", "MOON_BOXES", "MOON_IMAGE_VIEWS", "MOON_BOXES_MISSING",
    "MOON_INFONCE_QUEUE_MODE", "MOON_INFONCE_QUEUE_WEIGHT", "MOON_INFONCE_MOMENTUM", "MOON_INFONCE_UNIFORMITY",
    "MOON_INFONCE_COLLAPSE_PATIENCE", "MOON_GRAD_CACHE_ROWS",
}  # fmt: skip


def swift_argv(recipe: Path) -> tuple[list[str], dict]:
    """The argv `swift <cmd> recipe.yaml` hands its argument parser, and the recipe's ENV."""
    from swift.cli.main import parse_yaml_args

    env = (yaml.safe_load(recipe.read_text()) or {}).get("ENV", {})
    argv = [str(recipe)]
    saved = dict(os.environ)
    try:
        parse_yaml_args(argv)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return argv, env


def arguments_class(recipe: Path):
    from swift.arguments import EvalArguments, SftArguments

    return EvalArguments if recipe.name.startswith("eval") else SftArguments


def test_there_are_the_four_recipes():
    assert {r.name for r in RECIPES} >= {"tiny_cpu.yaml", "moon_3b.yaml", "moon_3b_lora.yaml", "eval_moon.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_with_swift_argument_classes(recipe):
    from transformers import HfArgumentParser

    argv, env = swift_argv(recipe)
    parser = HfArgumentParser([arguments_class(recipe)])
    namespace, unknown = parser.parse_known_args(argv)
    assert unknown == [], f"{recipe.name}: options swift does not know: {unknown}"
    assert namespace.model_type == "moon" and namespace.task_type == "embedding"
    assert set(env) <= KNOWN_ENV, f"{recipe.name}: unknown ENV {set(env) - KNOWN_ENV}"


@pytest.mark.parametrize("recipe", [r for r in RECIPES if not r.name.startswith("eval")], ids=lambda p: p.name)
def test_training_recipes_use_moon_losses_callbacks_and_strict_rows(recipe):
    config = yaml.safe_load(recipe.read_text())
    assert config["loss_type"] in {"infonce", "moon_infonce"} and config["strict"] is True
    assert "moon_moe" in config["callbacks"]
    if config.get("ENV", {}).get("MOON_IMAGE_VIEWS", "original") != "original":
        assert config["ENV"]["MOON_BOXES"], "crops need a box store"


def test_a_misspelt_option_is_caught(tmp_path):
    from transformers import HfArgumentParser

    broken = tmp_path / "broken.yaml"
    broken.write_text((REPO_ROOT / "recipes" / "tiny_cpu.yaml").read_text().replace("loss_type:", "los_type:"))
    from swift.arguments import SftArguments

    _, unknown = HfArgumentParser([SftArguments]).parse_known_args(swift_argv(broken)[0])
    assert unknown[:1] == ["--los_type"]


@pytest.mark.parametrize("recipe", [r for r in RECIPES if "3b" in r.name], ids=lambda p: p.name)
def test_the_advertised_queue_is_all_usable_at_the_recipes_batch(recipe):
    """The queue a recipe sets must be young enough to use in full (the loss refuses it at the first step
    otherwise): max age x products per optimizer step >= size. Rows carry the header's one hard negative."""
    config = yaml.safe_load(recipe.read_text())
    env = config["ENV"]
    assert "--hard-negatives 1" in (REPO_ROOT / "recipes" / "moon_3b.yaml").read_text()  # both use its data
    products_per_step = (int(env.get("NPROC_PER_NODE", 1)) * config["per_device_train_batch_size"]
                         * config["gradient_accumulation_steps"] * 2)  # fmt: skip
    size, age = int(env["MOON_INFONCE_QUEUE_SIZE"]), int(env["MOON_INFONCE_QUEUE_MAX_AGE"])
    assert size > 0 and age * products_per_step >= size, (size, age, products_per_step)
    assert env["MOON_INFONCE_QUEUE_MODE"] in ("momentum", "split")  # not the single softmax that collapses


def test_upcycles_memory_plan_defaults_are_the_3b_recipes():
    """`moon-swift upcycle` estimates memory for recipes/moon_3b.yaml unless told otherwise."""
    from moon_swift.apps.cli import build_parser

    config = yaml.safe_load((REPO_ROOT / "recipes" / "moon_3b.yaml").read_text())
    args = build_parser().parse_args(["upcycle", "--base", "b", "--out", "o"])
    assert args.plan_gpus == int(config["ENV"]["NPROC_PER_NODE"])
    assert args.plan_rows == config["per_device_train_batch_size"] and args.plan_tokens == config["max_length"]
    assert args.plan_negatives == 1 and "--hard-negatives 1" in (REPO_ROOT / "recipes" / "moon_3b.yaml").read_text()
    assert args.plan_momentum == (config["ENV"]["MOON_INFONCE_QUEUE_MODE"] == "momentum")
