"""Options stated once: every config field behind a verb has a generated flag with help, recipe values in help texts
and the README come from RECIPES, ``--print-config`` shows the recipe's config, and the parser loads no torch."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastfashion import cli
from fastfashion.bench.demo import DemoConfig
from fastfashion.bench.throughput import BenchConfig
from fastfashion.data.adopt import IndexConfig
from fastfashion.data.shard import ShardConfig
from fastfashion.data.synth import SynthConfig
from fastfashion.options import (
    add_options,
    config_from_args,
    dest_of,
    flag_of,
    format_value,
    option,
    option_of,
    options,
)
from fastfashion.remote.store import RemoteConfig
from fastfashion.train.config import TrainConfig
from fastfashion.train.recipes import RECIPE_NOTES, RECIPE_OPTIONS, RECIPES, recipe_table, recipe_values

README = Path(__file__).resolve().parents[1] / "README.md"

VERB_CONFIGS = {"synth": [SynthConfig], "shard": [ShardConfig, RemoteConfig], "index": [IndexConfig],
                "train": [TrainConfig, RemoteConfig], "bench": [BenchConfig, RemoteConfig], "demo": [DemoConfig]}
"""The configs each verb builds from its flags."""

NOT_OPTIONS = {  # fields with no flag, each for a reason; anything else without one fails below
    TrainConfig: {"lr_factor", "lr_patience", "ramp",  # library-only knobs of the plateau schedule and resizing
                  "remote"},  # a RemoteConfig: the remote group's flags build it
    SynthConfig: {"quality", "schema", "balanced"},  # generator internals; balanced is the demo's choice
    BenchConfig: {"remote",  # the remote group
                  "seed"},  # the bench's sample order is fixed so that runs compare
    DemoConfig: {"val", "test",  # derived from --train by the CLI
                 "image_size", "recipe", "batch_size", "bench_rounds", "bench_batches", "bench_train_steps",
                 "seed"},  # the demo's fixed plan
    RemoteConfig: {"backoff", "prefetch"},  # library-only transfer tuning
    ShardConfig: set(),
    IndexConfig: set(),
}
NO_CACHE = {"shard": {"cache_dir", "cache_limit", "offline"}}  # shard writes, it caches nothing


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_the_exclusion_list_is_exactly_the_fields_without_a_flag():
    for cls, excluded in NOT_OPTIONS.items():
        without = {f.name for f in dataclasses.fields(cls) if option_of(f) is None}
        assert without == excluded, cls.__name__


@pytest.mark.parametrize("verb", sorted(VERB_CONFIGS))
def test_every_option_field_has_its_generated_flag_with_help(verb):
    actions = {a.dest: a for a in _subparsers()[verb]._actions}
    for cls in VERB_CONFIGS[verb]:
        for name, (_, opt) in options(cls).items():
            if name in NO_CACHE.get(verb, ()):
                continue
            action = actions.get(dest_of(name, opt))
            assert action is not None, f"{verb}: {cls.__name__}.{name} has no flag"
            assert action.option_strings == [flag_of(name, opt)], f"{verb}: {name}"
            assert action.help and len(action.help) > 8, f"{verb}: {cls.__name__}.{name} has no help text"


# "seed: 45", "fast: 0.35,1", "every recipe: 224" in a help text: each must be what RECIPES says
STATED = re.compile(r"\b(every recipe|" + "|".join(RECIPES) + r"): ([^\s,;)]+(?:,[0-9.]+(?=[,;)]))?)")


def _wrong_recipe_values(field: str, text: str) -> list[str]:
    values = {r: format_value(v) for r, v in recipe_values(field).items()}
    wrong = []
    for recipe, shown in STATED.findall(text):
        expected = set(values.values()) if recipe == "every recipe" else {values[recipe]}
        if recipe == "every recipe" and len(expected) > 1 or shown not in expected:
            wrong.append(f"{field}: {recipe}: {shown} (RECIPES: {values})")
    return wrong


def test_the_recipe_value_checker_sees_a_stale_value():
    assert _wrong_recipe_values("lr", "peak learning rate (seed: 1e-4, fast: 2e-4)") == [
        "lr: fast: 2e-4 (RECIPES: {'seed': '1e-4', 'fast': '5e-4', 'demo': '2e-3'})"]
    assert _wrong_recipe_values("crop_scale", "(seed: 0.08,1, fast: 0.35,1, demo: 0.25,1)") == []
    assert _wrong_recipe_values("image_size", "(every recipe: 224)") == []
    assert _wrong_recipe_values("epochs", "(every recipe: 45)") != []


def test_train_help_states_recipe_values_from_RECIPES_only():
    train = _subparsers()["train"]
    wrong, stated = [], 0
    for action in train._actions:
        field = {"no_augment": "augment"}.get(action.dest, action.dest)
        if field in RECIPE_OPTIONS:
            # not given must mean the recipe's value (--no-augment: False, which config_values leaves out)
            assert action.default is None or action.dest == "no_augment" and action.default is False, field
            stated += len(STATED.findall(action.help))
            wrong += _wrong_recipe_values(field, action.help)
        else:
            assert not STATED.findall(action.help or ""), f"{action.dest} states a recipe value: {action.help}"
    assert wrong == []
    assert stated >= len(RECIPE_OPTIONS)  # every recipe option says what each recipe sets
    # the verb's description names the recipes but restates none of their values
    assert not re.search(r"\d", train.description.split("Writes")[0].replace("ResNet-18", "")), train.description


def test_recipe_tables_name_training_options_only():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {k for values in RECIPES.values() for k in values} <= set(RECIPE_OPTIONS) <= fields
    assert list(RECIPE_NOTES) == list(RECIPES)
    assert all(option_of(f) is not None for f in dataclasses.fields(TrainConfig) if f.name in RECIPE_OPTIONS)


def test_readme_recipe_table_is_the_generated_one():
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- recipe-table -->\n(.*?)\n<!-- /recipe-table -->", text, re.S)
    assert m, "README.md: the recipe table markers are missing"
    assert m.group(1) == recipe_table(), "README.md's recipe table is stale: paste recipe_table() between the markers"
    assert "| `lr` | 1e-4 | 5e-4 | 2e-3 |" in recipe_table()  # the table reads RECIPES (and the seed defaults)


def _print_config(*args: str) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(["train", "--print-config", *args]) == 0
    return json.loads(buf.getvalue())


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_print_config_is_the_recipe(recipe):
    shown = _print_config("--recipe", recipe)
    expected = dataclasses.asdict(TrainConfig(shard_dir=None, out=None, **{**RECIPES[recipe], "recipe": recipe}))
    assert shown == json.loads(json.dumps(expected))
    assert list(shown)[:4] == ["recipe", "shard_dir", "out", "epochs"]  # recipe first, then field order


def test_every_train_flag_reaches_the_config():
    given = {"epochs": "3", "batch_size": "8", "optimizer": "adamw", "lr": "0.01", "weight_decay": "0.2",
             "schedule": "cosine", "warmup_epochs": "2", "label_smoothing": "0.3", "dropout": "0.1",
             "class_balance": "sqrt", "image_size": "64x48", "resize_start": "0.5", "ema_halflife": "2",
             "crop_scale": "0.5,1", "rotation": "5", "color_jitter": "0.3", "precision": "fp32", "device": "cpu",
             "backend": "torch", "loader_output": "float", "weights": "w.pt", "max_steps": "7", "seed": "9",
             "workers": "2",
             "checkpoint_minutes": "0", "checkpoint_every": "4", "shard_dir": "s", "out": "o"}
    switches = ["--no-augment", "--no-verify", "--overwrite"]
    table = options(TrainConfig)
    args = [a for name, v in given.items() for a in (flag_of(name, table[name][1]), v)]
    shown = _print_config("--recipe", "fast", *args, *switches, "--storage-option", "anon=true", "--retries", "1")
    assert {k for k in table if k != "recipe"} - set(given) == {"augment", "verify", "overwrite", "resume"}
    for name, text in given.items():
        assert format_value(shown[name]) == text.replace("x", ","), name
    assert (shown["augment"], shown["verify"], shown["overwrite"], shown["resume"]) == (False, False, True, False)
    assert shown["checkpoint_minutes"] == 0.0  # 0: only at epoch ends (it was silently 10 before)
    assert shown["remote"]["storage_options"] == {"anon": True} and shown["remote"]["retries"] == 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Toy:
    size: int = option(3, help="size (default: %(default)s)")
    ratio: tuple = option((0.5, 0.5), metavar="A,B", parse=lambda t: tuple(float(x) for x in t.split(",")),
                          help="two fractions")
    fast: bool = option(False, help="go fast")
    check: bool = option(True, flag="--no-check", help="skip the check")
    shuffle: bool = option(True, flag="--no-shuffle", dest="no_shuffle", help="keep the order")
    name: str | None = option(None, choices=("a", "b"), help="a or b")
    internal: int = 7


def test_add_options_and_config_from_args_round_trip():
    p = argparse.ArgumentParser()
    add_options(p, _Toy)
    assert [a.option_strings[0] for a in p._actions[1:]] == ["--size", "--ratio", "--fast", "--no-check",
                                                             "--no-shuffle", "--name"]
    ratio = p._actions[2]
    assert (ratio.default, ratio.metavar, p._actions[1].metavar, p._actions[1].type) == ("0.5,0.5", "A,B", "N", int)
    assert config_from_args(_Toy, p.parse_args([])) == _Toy()
    cfg = config_from_args(_Toy, p.parse_args(["--size", "4", "--ratio", "0.2,0.8", "--fast", "--no-check",
                                               "--no-shuffle", "--name", "b"]), internal=1)
    assert cfg == _Toy(size=4, ratio=(0.2, 0.8), fast=True, check=False, shuffle=False, name="b", internal=1)
    with pytest.raises(SystemExit):
        p.parse_args(["--name", "c"])
    unset = argparse.ArgumentParser()
    add_options(unset, _Toy, ["size", "check"], unset=True, note=lambda name: f"note on {name}")
    assert vars(unset.parse_args([])) == {"size": None, "check": None}
    assert unset._actions[1].help == "size (default: %(default)s) (note on size)"


def test_format_value():
    assert [format_value(v) for v in (1e-4, 5e-4, 2e-3, 0.05, 0.0, 45, 1.0, (0.08, 1.0), None, True, "amp")] == [
        "1e-4", "5e-4", "2e-3", "0.05", "0", "45", "1", "0.08,1", "off", "on", "amp"]


def test_building_the_parser_and_help_import_no_torch():
    verbs = ["synth", "shard", "index", "inspect", "train", "evaluate", "predict", "bench", "demo"]
    code = f"""
import contextlib, io, sys
from fastfashion.cli import build_parser, main
build_parser()
assert "torch" not in sys.modules, "build_parser"
for argv in [["--help"]] + [[verb, "--help"] for verb in {verbs!r}]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(argv)
    assert "torch" not in sys.modules, argv
    assert not any(m.startswith("nvidia") for m in sys.modules), argv
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
