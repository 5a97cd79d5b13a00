"""Nothing lost, nothing silently wrong: one folder per model, one file per task version,
one writer per result, bad run settings refused before the work, fuzzed task options."""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import Task, TaskResult, UsageError, option
from harness.api import registry
from harness.api.registry import all_tasks
from harness.api.task import parse_config
from harness.engine.models import LoadOptions, slugify
from harness.results.validate import validate_file
from harness.run.cli import main
from harness.run.runner import RunSpec, check_spec, checkpoint_dir, result_lock, result_path, run, run_task
from tests.tiny_models import tiny_model, tiny_tokenizer


@dataclass
class EchoConfig:
    n: int = option(5, "values averaged", ge=1)


class Echo(Task):
    """A task that takes no time: one plot, one metric."""

    name = "trust_echo"
    version = "1.0"
    Config = EchoConfig

    def run(self, model, config, ctx):
        fig = ctx.figure()
        fig.add_subplot().plot([0, 1])
        ctx.save_figure(fig, "plot.png")
        return TaskResult(metrics={"x": ctx.metric(np.arange(config.n, dtype=float))})


@pytest.fixture
def register():
    """Register test tasks for one test only, so no other test sees them."""
    added: list[str] = []

    def add(cls: type[Task]) -> type[Task]:
        registry.register_task(cls)
        added.append(cls.name)
        return cls

    yield add
    for name in added:
        registry._registered.pop(name, None)
        registry._origin.pop(name, None)


@pytest.fixture
def echo(register):
    return register(Echo)


def save_tiny(folder: Path) -> Path:
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("models") / "tiny")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def echo_run(capsys, out: Path, *models: Path, extra: tuple[str, ...] = ()) -> tuple[int, str, str]:
    argv = ["run", "--task", "trust_echo", "--output-dir", str(out), "--device", "cpu", "--no-progress", *extra]
    for m in models:
        argv += ["--model", str(m)]
    return cli(capsys, *argv)


def results_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.json") if not any(part.startswith(".") for part in p.relative_to(out).parts))


def assert_consistent(out: Path) -> None:
    """Every results file validates and every artifact it lists exists, inside its own folder."""
    for path in results_files(out):
        assert validate_file(path) == [], path
        for artifact in json.loads(path.read_text())["artifacts"]:
            target = (path.parent / artifact).resolve()
            assert target.exists() and target.is_relative_to(path.parent.resolve()), artifact


# ---- results paths ----


def test_models_sharing_a_last_name_get_their_own_folders(capsys, tmp_path, echo):
    a, b = save_tiny(tmp_path / "a" / "tiny"), save_tiny(tmp_path / "b" / "tiny")
    code, _, err = echo_run(capsys, tmp_path / "out", a, b)
    assert code == 0, err
    files = results_files(tmp_path / "out")
    assert len(files) == 2 and files[0].parent != files[1].parent
    assert {json.loads(f.read_text())["model"]["spec"] for f in files} == {str(a), str(b)}
    assert all(f.parent.name.startswith("tiny-") for f in files)  # readable, then a digest of the full path
    assert_consistent(tmp_path / "out")


HOSTILE_SPECS = [
    "..",
    ".",
    "../x",
    "../../etc",
    "/abs/model",
    "a/../../b",
    "x/..",
    "~",
    "~/m",
    "a b/c",
    "_org/m",
    "a__b/c",
    "a/b__c",
    "org1/m",
    "org2/m",
    "gemma3-270m",
    "smollm2-135m",
    "m.gguf",
    "../m.gguf",
    "\\..\\x",
]


def test_result_paths_are_distinct_and_stay_inside_the_output_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a" / "tiny").mkdir(parents=True)
    (tmp_path / "b" / "tiny").mkdir(parents=True)
    out = tmp_path / "deep" / "out"
    specs = HOSTILE_SPECS + ["a/tiny", "b/tiny", str(tmp_path / "a" / "tiny")]
    spec = RunSpec(models=specs, tasks=["weekday_circle"], load=LoadOptions(device="cpu"))
    task = all_tasks()["weekday_circle"]
    paths = {s: result_path(out, s, task, task.Config(), spec) for s in specs}
    for s, path in paths.items():
        assert path.resolve().is_relative_to(out.resolve()), s
        assert path.parent.parent == out and not path.parent.name.startswith((".", "_")), s
    same_folder = {"a/tiny", str(tmp_path / "a" / "tiny")}  # one model, named two ways
    distinct = [p for s, p in paths.items() if s not in same_folder] + [paths["a/tiny"]]
    assert len({p.parent for p in distinct}) == len(distinct)
    assert paths["a/tiny"] == paths[str(tmp_path / "a" / "tiny")]
    assert paths["org1/m"].parent.name == "org1__m" and paths["gemma3-270m"].parent.name == "gemma3-270m"


def test_a_revision_is_another_folder():
    assert slugify("org/m", "v1") != slugify("org/m", "v2") != slugify("org/m")


def test_a_task_name_that_is_a_path_is_refused(tmp_path):
    evil = type("Evil", (Echo,), {"name": "../../evil"})
    with pytest.raises(UsageError, match="cannot name a results file"):
        result_path(tmp_path, "org/m", evil, Echo.Config(), RunSpec(models=["org/m"], tasks=["x"]))


def test_a_version_that_is_a_path_stays_one_name(tmp_path):
    odd = type("Odd", (Echo,), {"version": "../../2"})
    path = result_path(tmp_path, "org/m", odd, Echo.Config(), RunSpec(models=["org/m"], tasks=["x"]))
    assert path.parent == tmp_path / "org__m" and "/" not in path.name and ".." not in path.name


def test_training_checkpoints_are_keyed_by_the_weights(tmp_path):
    path = tmp_path / "m" / "t-v1.0.json"
    assert checkpoint_dir(path, "sha256:a") != checkpoint_dir(path, "sha256:b")
    assert checkpoint_dir(path, "sha256:a").parent == path.parent and checkpoint_dir(path, "sha256:a").name.startswith(".")


# ---- versions, settings and reuse ----


def test_a_new_task_version_keeps_the_old_results(capsys, tmp_path, tiny_folder, echo, monkeypatch):
    out = tmp_path / "out"
    assert echo_run(capsys, out, tiny_folder)[0] == 0
    monkeypatch.setattr(Echo, "version", "2.0")
    code, stdout, _ = echo_run(capsys, out, tiny_folder)
    assert code == 0 and "reused" not in stdout
    versions = sorted(json.loads(p.read_text())["task"]["version"] for p in results_files(out))
    assert versions == ["1.0", "2.0"]
    code, stdout, _ = echo_run(capsys, out, tiny_folder)
    assert code == 0 and "reused" in stdout and "loading" not in stdout  # same version: reused
    assert_consistent(out)


def test_a_result_missing_its_plots_is_run_again(capsys, tmp_path, tiny_folder, echo):
    out = tmp_path / "out"
    assert echo_run(capsys, out, tiny_folder)[0] == 0
    [path] = results_files(out)
    plot = path.parent / json.loads(path.read_text())["artifacts"][0]
    plot.unlink()
    code, stdout, _ = echo_run(capsys, out, tiny_folder)
    assert code == 0 and "reused" not in stdout and plot.is_file()


def test_another_dtype_is_another_file(capsys, tmp_path, tiny_folder, echo):
    out = tmp_path / "out"
    assert echo_run(capsys, out, tiny_folder, extra=("--dtype", "float32"))[0] == 0
    assert echo_run(capsys, out, tiny_folder, extra=("--dtype", "bfloat16"))[0] == 0
    assert sorted(json.loads(p.read_text())["model"]["dtype"] for p in results_files(out)) == ["bfloat16", "float32"]


def test_one_model_named_twice_runs_once(capsys, tmp_path, tiny_folder, echo):
    code, stdout, err = echo_run(capsys, tmp_path / "out", tiny_folder, Path(str(tiny_folder) + "/"))
    assert code == 0, err
    assert stdout.count("running trust_echo") == 1 and len(results_files(tmp_path / "out")) == 1


# ---- concurrency ----


def test_a_result_being_written_refuses_a_second_run_before_it_loads(capsys, tmp_path, tiny_folder, echo):
    out = tmp_path / "out"
    spec = RunSpec(models=[str(tiny_folder)], tasks=["trust_echo"], output_dir=out, load=LoadOptions(device="cpu"))
    path = result_path(out, str(tiny_folder), Echo, Echo.Config(), spec)
    with result_lock(path):  # what a run in another process holds while it writes this result
        code, stdout, err = echo_run(capsys, out, tiny_folder)
    assert code == 2 and "another run is writing" in err and len(err.strip().splitlines()) == 1
    assert "loading" not in stdout and not results_files(out)
    assert echo_run(capsys, out, tiny_folder)[0] == 0  # the lock went with its holder


def test_each_run_stages_its_plots_in_a_folder_of_its_own(tmp_path, tiny_folder, register):
    """A writer that ignores the lock (a direct `run_task`) must not take the plots of the run in progress."""
    from harness.engine.models import load_model

    out = tmp_path / "out"
    spec = RunSpec(
        models=[str(tiny_folder)], tasks=["trust_echo"], output_dir=out, show_progress=False, load=LoadOptions(device="cpu")
    )
    model = load_model(str(tiny_folder), spec.load)
    path = out / "m" / "trust_echo-v1.0.json"

    class Outer(Echo):
        def run(self, model, config, ctx):
            fig = ctx.figure()
            fig.add_subplot().plot([1, 0])
            ctx.save_figure(fig, "outer.png")
            run_task(model, Echo, Echo.Config(), path, spec)  # a second writer of the same result, mid-run
            return super().run(model, config, ctx)

    results = run_task(model, Outer, Echo.Config(), path, spec)
    assert "trust_echo-v1.0/outer.png" in results.artifacts
    assert_consistent(out)
    assert not list(path.parent.glob(".*partial*"))


def test_leftovers_of_killed_runs_are_cleared(capsys, tmp_path, tiny_folder, echo):
    out = tmp_path / "out"
    spec = RunSpec(models=[str(tiny_folder)], tasks=["trust_echo"], output_dir=out, load=LoadOptions(device="cpu"))
    path = result_path(out, str(tiny_folder), Echo, Echo.Config(), spec)
    stem = path.name.removesuffix(".json")
    path.parent.mkdir(parents=True)
    leftovers = [path.parent / f".{stem}.partial-99999-abcd", path.parent / f".{stem}.checkpoints-00000000"]
    for folder in leftovers:
        (folder / "x").mkdir(parents=True)
    leftovers.append(path.parent / f".{path.name}.abc123.tmp")
    leftovers[-1].write_text("{")
    assert echo_run(capsys, out, tiny_folder)[0] == 0
    assert not any(p.exists() for p in leftovers)
    assert_consistent(out)


# ---- run settings: one line, exit 2, before the work ----


def unwritable_dir(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
        return folder
    if not os.path.isdir("/sys"):
        pytest.skip("needs a folder root cannot write to")
    return Path("/sys")


@pytest.mark.parametrize("case", ["file", "under_a_file", "unwritable"])
def test_a_bad_output_dir_is_one_line_before_loading(capsys, tmp_path, tiny_folder, case):
    (tmp_path / "file").write_text("not a folder")
    out = {"file": tmp_path / "file", "under_a_file": tmp_path / "file" / "sub", "unwritable": None}[case]
    out = out or unwritable_dir(tmp_path)
    code, stdout, err = cli(capsys, "run", "--task", "weekday_circle", "--model", str(tiny_folder), "--output-dir", str(out))
    assert code == 2 and "--output-dir" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "loading" not in stdout


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--seed", "-1", "--seed -1"),
        ("--seed", str(2**32), "from 0 to 4294967295"),
        ("--bootstrap", "5", "from 100 to 100000"),
        ("--bootstrap", str(10**9), "from 100 to 100000"),
        ("--limit", "0", "positive integer"),
        ("--limit", "-3", "positive integer"),
    ],
)
def test_run_settings_out_of_range_are_one_line_before_loading(capsys, tmp_path, tiny_folder, flag, value, message):
    code, stdout, err = cli(
        capsys, "run", "--task", "weekday_circle", "--model", str(tiny_folder), "--output-dir", str(tmp_path), flag, value
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "loading" not in stdout and not results_files(tmp_path)


@pytest.mark.parametrize("arg", ["n_components=5\n6", "template=paper\x1b[2J", "colour\n=red"])
def test_an_error_echoing_control_characters_stays_one_line(capsys, tmp_path, arg):
    code, _, err = cli(capsys, "run", "--task", "weekday_circle", "--task-arg", arg, "--output-dir", str(tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "\x1b" not in err


def test_the_seed_range_is_numpy_and_torch_range():
    import torch

    for seed in (0, 2**32 - 1):
        check_spec(RunSpec(models=["m"], tasks=["t"], seed=seed))
        np.random.default_rng([seed, 3])
        torch.manual_seed(seed)
    for bad in (-1, 2**32, True):
        with pytest.raises(UsageError):
            check_spec(RunSpec(models=["m"], tasks=["t"], seed=bad))


def test_api_callers_get_the_same_checks(tmp_path, tiny_folder):
    with pytest.raises(UsageError, match="--bootstrap"):
        run(RunSpec(models=[str(tiny_folder)], tasks=["weekday_circle"], output_dir=tmp_path, bootstrap=0), report=lambda _: None)
    assert not list(tmp_path.iterdir())


# ---- --task-arg parsing, fuzzed ----

TASKS = sorted(all_tasks().items())
AWKWARD = [
    "",
    " ",
    "none",
    "None",
    "null",
    "true",
    "false",
    "yes",
    "0",
    "-1",
    "1e400",
    "-1e400",
    "nan",
    "inf",
    "-inf",
    "1,2,3",
    "1,,2",
    ",",
    "a,b",
    "2x2,3x3",
    "all",
    "{a} {b}",
    "{",
    "}",
    "{x}",
    "=",
    "1=2",
    "\0",
    "\x7f",
    "é",
    "9" * 40,
]


def value_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(AWKWARD),
        st.text(max_size=16),
        st.integers(-(10**6), 10**6).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.lists(st.integers(-3, 40).map(str), min_size=1, max_size=4).map(",".join),
    )


def typed_value(annotation: object) -> st.SearchStrategy[object]:
    """Values of the declared type (bounds aside), so that many drawn options parse and the round trip is tested."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[typed_value(a) for a in args])
    if origin is Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(typed_value(args[0] if args else str), min_size=1, max_size=4)
    return {
        type(None): st.none(),
        bool: st.booleans(),
        int: st.integers(-5, 10**6),
        float: st.floats(-1e6, 1e6, allow_nan=False),
        str: st.text(st.characters(blacklist_characters=","), max_size=12),
    }.get(annotation, st.text(max_size=8))


def task_arg(task: type[Task]) -> st.SearchStrategy[str]:
    hints = typing.get_type_hints(task.Config)
    fields = [f.name for f in dataclasses.fields(task.Config)]
    if not fields:
        return st.one_of(st.text(max_size=12), st.tuples(st.text(max_size=10), value_text()).map("=".join))
    typed = st.sampled_from(fields).flatmap(lambda k: typed_value(hints[k]).map(lambda v: f"{k}={render(v)}"))
    named = st.tuples(st.sampled_from(fields), value_text()).map("=".join)
    anything = st.tuples(st.text(max_size=10), value_text()).map("=".join)
    return st.one_of(typed, typed, named, anything, st.text(max_size=12))


def conforms(value: object, annotation: object) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is Literal:
        return value in args
    if annotation is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0] if args else str) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def render(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(render(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_task_args_parse_or_fail_with_a_usage_error(data):
    name, task = data.draw(st.sampled_from(TASKS))
    args = data.draw(st.lists(task_arg(task), max_size=4))
    try:
        config = parse_config(task, args)
    except UsageError:
        return
    hints = typing.get_type_hints(task.Config)
    for f in dataclasses.fields(config):
        assert conforms(getattr(config, f.name), hints[f.name]), (name, f.name, getattr(config, f.name))
    given_keys = {a.partition("=")[0].strip() for a in args}
    again = parse_config(task, [f"{k}={render(getattr(config, k))}" for k in sorted(given_keys)])
    assert again == config
