"""Leaderboards treat results files as hostile input and never lose or leak data.

Plots are copied only from inside their run's folder, names never lead outside --out,
numbers that are not finite never rank or break the JSON, build and publish delete nothing
and commit only their own files, and rebuilding from someone else's results keeps every
board that was there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.report.build import build
from harness.report.publish import publish
from harness.results import write_results
from harness.results.validate import validate_file
from harness.run.cli import main
from tests.report.test_leaderboard import PNG, fake_results, results_dir  # noqa: F401  (fixture)

REPO_LEADERBOARDS = Path(__file__).resolve().parents[2] / "leaderboards"


def strict_json(text: str):
    """Parse as a browser would: NaN and Infinity are not JSON."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def write_raw(path: Path, results) -> None:
    """A results file as Python's json writes it, so NaN and Infinity survive as literals."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results if isinstance(results, dict) else results.model_dump(mode="python")))


def board_rows(out: Path, task: str) -> dict[str, dict]:
    data = strict_json((out / f"{task}.json").read_text())
    return {(b["task_version"], b["config_hash"], r["model"]): r for b in data["boards"] for r in b["rows"]}


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"") for p in root.rglob("*")
    }


def test_only_regular_png_files_inside_the_run_folder_are_copied(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG + b" secret")
    results = tmp_path / "results"
    run = results / "m" / "weekday_circle"
    run.mkdir(parents=True)
    (run / "good.png").write_bytes(PNG)
    (run / "link.png").symlink_to(secret)
    (run / "text.png").write_text("not an image")
    (run / "huge.png").write_bytes(PNG + b"\0" * (5 * 2**20))
    os.mkfifo(run / "fifo.png")
    (results / "m" / "elsewhere.png").write_bytes(PNG + b" a sibling's plot")
    artifacts = [
        "weekday_circle/link.png",
        "weekday_circle/text.png",
        "weekday_circle/huge.png",
        "weekday_circle/fifo.png",
        "weekday_circle/good.png",
    ]
    write_results(results / "m" / "weekday_circle.json", fake_results("org/m", 0.5, artifacts=artifacts))
    out = tmp_path / "lb"
    report = build(results, out)
    [row] = board_rows(out, "weekday_circle").values()
    assert [Path(a).name for a in row["artifacts"]] == ["good.png"]
    copied = [p.read_bytes() for p in (out / "assets").rglob("*") if p.is_file() and p.suffix == ".png"]
    assert copied == [PNG]
    refused = " ".join(reason for _, reason in report.skipped)
    for name in artifacts[:-1]:
        assert repr(name) in refused, name


@pytest.mark.parametrize(
    "artifact",
    [
        "/tmp/secret.png",
        "../secret.png",
        "weekday_circle/../../../secret.png",
        "elsewhere.png",
        "other/p.png",
        "weekday_circle//p.png",
    ],
)
def test_a_results_file_whose_artifacts_leave_its_folder_is_refused_whole(tmp_path, artifact):
    results = tmp_path / "results"
    write_results(results / "m" / "weekday_circle.json", fake_results("org/m", 0.5, artifacts=[artifact]))
    problems = validate_file(results / "m" / "weekday_circle.json")
    assert len(problems) == 1 and problems[0].startswith("artifacts:")
    report = build(results, tmp_path / "lb")
    assert report.used == [] and "artifacts:" in report.skipped[0][1]


def test_a_run_folder_that_is_a_link_is_not_its_own_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "plot.png").write_bytes(PNG + b" outside")
    results = tmp_path / "results"
    (results / "m").mkdir(parents=True)
    (results / "m" / "weekday_circle").symlink_to(elsewhere, target_is_directory=True)
    write_results(results / "m" / "weekday_circle.json", fake_results("org/m", 0.5, artifacts=["weekday_circle/plot.png"]))
    out = tmp_path / "lb"
    build(results, out)
    assert not (out / "assets").exists()


@pytest.mark.parametrize("name", ["../../escape", "/tmp/absolute", "a/b", "index", "..", ".hidden", "x" * 300, "a\\b"])
def test_task_names_never_lead_outside_out(tmp_path, name):
    results = tmp_path / "work" / "results"
    (results / "m" / "t").mkdir(parents=True)
    (results / "m" / "t" / "p.png").write_bytes(PNG)
    write_raw(results / "m" / "t.json", fake_results("../../model", 0.5, task=name, artifacts=["t/p.png"]))
    before = files_under(tmp_path)
    out = tmp_path / "work" / "deep" / "lb"
    report = build(results, out)
    after = {k: v for k, v in files_under(tmp_path).items() if not k.startswith("work/deep")}
    assert after == before
    assert report.tasks == [] and "cannot name a leaderboard file" in report.skipped[0][1]
    assert sorted(p.name for p in out.iterdir()) == ["findings.json", "index.html", "index.json"]


def test_nan_infinity_and_absurd_values_are_refused_as_validate_refuses_them(tmp_path):
    results = tmp_path / "results"
    write_raw(results / "fine" / "weekday_circle.json", fake_results("fine", 0.5))
    for slug, value in [("nan", float("nan")), ("inf", float("inf")), ("huge", 1e308), ("big", -2e12)]:
        data = fake_results(slug, 0.1).model_dump(mode="python")
        data["metrics"]["accuracy"]["value"] = value
        data["reference"]["metrics"]["paper-model"] = {"accuracy": value}
        data["task"]["config"] = {"template": "paper", "threshold": value}
        write_raw(results / slug / "weekday_circle.json", data)
    out = tmp_path / "lb"
    report = build(results, out)
    data = strict_json((out / "weekday_circle.json").read_text())  # raises on NaN or Infinity
    rows = [r["model"] for b in data["boards"] for r in b["rows"]]
    assert rows == ["fine"]
    refused = {path.parent.name: reason for path, reason in report.skipped}
    assert sorted(refused) == ["big", "huge", "inf", "nan"]
    for slug, reason in refused.items():
        assert "metrics.accuracy.value" in reason and "(and 1 more)" in reason, reason
        assert validate_file(results / slug / "weekday_circle.json")[0] in reason
    html = (out / "index.html").read_text()
    embedded = html.split('id="leaderboard-data">')[1].split("</script>")[0]
    strict_json(embedded)


def test_build_deletes_nothing_it_did_not_create(tmp_path, results_dir):
    out = tmp_path / "lb"
    build(results_dir, out)
    (out / "assets" / "keep.txt").write_text("mine")
    (out / "README.md").write_text("mine too")
    build(results_dir, out)
    assert (out / "assets" / "keep.txt").read_text() == "mine" and (out / "README.md").read_text() == "mine too"


def test_build_refuses_a_folder_that_is_not_a_leaderboard(tmp_path, results_dir):
    home = tmp_path / "home"
    home.mkdir()
    (home / "index.html").write_text("my own page")
    with pytest.raises(UsageError, match="no leaderboard"):
        build(results_dir, home)
    assert files_under(home) == {"index.html": b"my own page"}


def test_build_refuses_a_board_it_cannot_read_before_writing(tmp_path, results_dir):
    out = tmp_path / "lb"
    build(results_dir, out)
    (out / "weekday_circle.json").write_text("{hand edited")
    before = files_under(out)
    with pytest.raises(UsageError, match="weekday_circle.json is not a leaderboard"):
        build(results_dir, out)
    assert files_under(out) == before


def test_out_or_to_naming_a_file_is_a_usage_error(tmp_path, results_dir, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    assert main(["leaderboard", "build", "--results", str(results_dir), "--out", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and len(err.strip().splitlines()) == 1
    out = tmp_path / "lb"
    build(results_dir, out)
    assert main(["leaderboard", "publish", "--dir", str(out), "--to", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and len(err.strip().splitlines()) == 1
    assert a_file.read_text() == "keep"


def test_publish_from_the_default_relative_dir_sends_the_files(tmp_path, results_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["leaderboard", "build", "--results", str(results_dir)]) == 0
    capsys.readouterr()
    for to in ("site", "hf://datasets/org/boards"):
        assert main(["leaderboard", "publish", "--to", to, "--dry-run"]) == 0
        listed = capsys.readouterr().out
        assert "would send 0" not in listed and "weekday_circle.json" in listed and "circle.png" in listed
    assert main(["leaderboard", "publish", "--to", "site"]) == 0
    assert "sent 0" not in capsys.readouterr().out
    assert (tmp_path / "site" / "weekday_circle.json").read_bytes() == (
        tmp_path / "leaderboards" / "weekday_circle.json"
    ).read_bytes()


def test_nothing_to_publish_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    build(tmp_path / "results", tmp_path / "lb")
    assert main(["leaderboard", "publish", "--dir", str(tmp_path / "lb"), "--to", str(tmp_path / "site"), "--dry-run"]) == 2
    assert "nothing to publish" in capsys.readouterr().err


def test_publish_sends_only_what_the_boards_link(tmp_path, results_dir):
    out = tmp_path / "lb"
    build(results_dir, out)
    (out / "assets" / "stray.png").write_bytes(PNG)
    (out / "notes.txt").write_text("private")
    sent = publish(out, str(tmp_path / "site"))
    assert not any("stray" in s or "notes" in s for s in sent)
    assert sorted(p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("*") if p.is_file()) == sorted(
        sent
    )


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def no_global_git_identity(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(var, raising=False)


def test_publish_commits_only_the_leaderboard_files(tmp_path, results_dir, no_global_git_identity):
    out = tmp_path / "lb"
    build(results_dir, out)
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", str(repo))
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "work.py").write_text("half done")
    git(repo, "add", "work.py")
    sent = publish(out, str(repo / "site" / "leaderboards"))
    committed = git(repo, "show", "--name-only", "--format=", "HEAD").split()
    assert sorted(committed) == sorted(f"site/leaderboards/{s}" for s in sent)
    assert git(repo, "diff", "--cached", "--name-only").split() == ["work.py"]  # still staged, not committed


def test_publish_without_a_git_identity_is_one_line_and_copies_nothing(tmp_path, results_dir, no_global_git_identity, capsys):
    out = tmp_path / "lb"
    build(results_dir, out)
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", str(repo))
    git(repo, "config", "user.useConfigOnly", "true")
    assert main(["leaderboard", "publish", "--dir", str(out), "--to", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "identity" in err and "git config user.email" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in repo.iterdir()] == [".git"]


def test_rebuilding_from_other_results_keeps_every_board_and_row(tmp_path, capsys):
    """The README's recipe: someone else's results are built into the repository's leaderboards."""
    a = tmp_path / "a"
    write_results(a / "model-a" / "weekday_circle.json", fake_results("org/model-a", 0.3))
    write_results(a / "model-a" / "month_circle.json", fake_results("org/model-a", 0.4, task="month_circle"))
    write_results(a / "model-b" / "weekday_circle.json", fake_results("org/model-b", 0.6))
    (a / "model-b" / "weekday_circle").mkdir()
    (a / "model-b" / "weekday_circle" / "circle.png").write_bytes(PNG)
    write_results(
        a / "model-b" / "weekday_circle.json", fake_results("org/model-b", 0.6, artifacts=["weekday_circle/circle.png"])
    )
    out = tmp_path / "leaderboards"
    assert main(["leaderboard", "build", "--results", str(a), "--out", str(out)]) == 0
    before = {t: board_rows(out, t) for t in ("weekday_circle", "month_circle")}

    b = tmp_path / "b"
    write_results(b / "model-c" / "weekday_circle.json", fake_results("org/model-c", 0.9, created="2026-12-01T00:00:00+00:00"))
    assert main(["leaderboard", "build", "--results", str(b), "--out", str(out)]) == 0
    assert "built 2 leaderboard(s) from 1 results file(s)" in capsys.readouterr().out
    after = {t: board_rows(out, t) for t in ("weekday_circle", "month_circle")}
    assert after["month_circle"] == before["month_circle"]
    assert {k: v for k, v in after["weekday_circle"].items() if k[2] != "org/model-c"} == before["weekday_circle"]
    assert [k[2] for k in after["weekday_circle"]] == ["org/model-c", "org/model-b", "org/model-a"]  # ranked together
    [plot] = after["weekday_circle"][next(k for k in after["weekday_circle"] if k[2] == "org/model-b")]["artifacts"]
    assert (out / plot).read_bytes() == PNG
    index = strict_json((out / "index.json").read_text())
    assert [t["task"] for t in index["tasks"]] == ["month_circle", "weekday_circle"]

    newer, older = tmp_path / "newer", tmp_path / "older"
    write_results(newer / "x" / "weekday_circle.json", fake_results("org/model-a", 0.7, created="2026-12-02T00:00:00+00:00"))
    write_results(older / "x" / "weekday_circle.json", fake_results("org/model-b", 0.1, created="2025-01-01T00:00:00+00:00"))
    build(newer, out)
    report = build(older, out)
    rows = board_rows(out, "weekday_circle")
    assert len(rows) == 3
    assert {k[2]: r["metrics"]["accuracy"]["value"] for k, r in rows.items()} == {
        "org/model-c": 0.9,
        "org/model-a": 0.7,
        "org/model-b": 0.6,
    }
    assert "older than the run already on the board" in report.skipped[0][1]


def test_the_repository_leaderboards_survive_a_rebuild(tmp_path):
    out = tmp_path / "leaderboards"
    shutil.copytree(REPO_LEADERBOARDS, out)
    before = {p.stem: board_rows(out, p.stem) for p in out.glob("*.json") if p.stem not in ("index", "findings")}
    results = tmp_path / "results"
    write_results(results / "new" / "weekday_circle.json", fake_results("org/new-model", 0.5))
    build(results, out)
    for task, rows in before.items():
        merged = board_rows(out, task)
        assert all({f: merged[k][f] for f in row} == row for k, row in rows.items()), task
        assert all((out / a).is_file() for row in merged.values() for a in row["artifacts"])
    assert any(k[2] == "org/new-model" for k in board_rows(out, "weekday_circle"))


def test_boards_come_from_the_results_not_the_task_registry(tmp_path, monkeypatch):
    import harness.api.registry

    def no_registry():
        raise AssertionError("leaderboard build must not import or query task code")

    monkeypatch.setattr(harness.api.registry, "all_tasks", no_registry)
    results = tmp_path / "results"
    write_results(results / "m" / "gone_plugin.json", fake_results("org/m", 0.5, task="gone_plugin", headline=["probe_r2"]))
    write_results(results / "m" / "weekday_circle.json", fake_results("org/m", 0.5))
    out = tmp_path / "lb"
    build(results, out)
    plugin = strict_json((out / "gone_plugin.json").read_text())
    assert plugin["description"] == "the gone_plugin task" and plugin["paper"].startswith("Engels")
    assert plugin["boards"][0]["headline_metrics"] == ["probe_r2"]
    assert strict_json((out / "weekday_circle.json").read_text())["boards"][0]["headline_metrics"] == ["accuracy", "probe_r2"]


# Fuzzing: random and mutated results files fed to `build`.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

HOSTILE_NAMES = [
    "../../escape",
    "/tmp/escape",
    "index",
    "INDEX",
    "a/b",
    "..",
    ".",
    "",
    "weekday_circle",
    "ok.task-1",
    "\u2028",
    "</script><script>document.title='x'</script>",
    "x" * 300,
    "__proto__",
    "constructor",
    "a\\b",
    "\0",
    "nul\0.png",
    "C:\\x",
]
names = st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(max_size=20))
numbers = st.one_of(st.floats(), st.sampled_from([1e308, -1e13, 1e12, 0.5, -0.0]), st.integers(-(10**30), 10**30))
junk = st.recursive(
    st.none() | st.booleans() | numbers | names,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=8,
)
artifacts = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "SECRET",
                "../secret.png",
                "run/../../secret.png",
                "run/../../../secret.png",
                "run/link.png",
                "run/linkdir/secret.png",
                "run/good.png",
                "run/fake.png",
                "run/",
                "/",
                "run//good.png",
                "run/./good.png",
                "run/missing.png",
                "run/good.png/..",
                "RUN/good.png",
            ]
        ),
        names.map(lambda n: f"run/{n}.png"),
        names,
    ),
    max_size=6,
)
metric = st.fixed_dictionaries(
    {
        "value": numbers,
        "ci_low": numbers,
        "ci_high": numbers,
        "n": st.integers(0, 10**20),
        "higher_is_better": st.sampled_from([True, False, None]),
    }
)


@st.composite
def results_files(draw) -> dict:
    data = fake_results("org/m", 0.5).model_dump(mode="python")
    task_names = st.one_of(st.just("weekday_circle"), st.just("plugin.task-2"), names)  # mostly names that build a board
    data["task"].update(
        name=draw(task_names),
        version=draw(names),
        config=draw(st.dictionaries(names, junk, max_size=3)),
        config_hash=draw(names),
        description=draw(names),
        paper=draw(names),
        headline_metrics=draw(st.none() | st.lists(names, max_size=3)),
    )
    data["model"].update(spec=draw(names), dtype=draw(names), quantization=draw(st.none() | names))
    data["metrics"] = draw(st.dictionaries(names, metric, max_size=4))
    data["reference"]["metrics"] = draw(st.dictionaries(names, st.dictionaries(names, numbers, max_size=2), max_size=2))
    data.update(
        seed=draw(st.integers(-(10**30), 10**30)),
        created_at=draw(names),
        artifacts=draw(artifacts) + draw(st.sampled_from([[], ["run/good.png"]])),
        notes=draw(st.lists(names, max_size=2)),
    )
    if draw(st.integers(0, 3)) == 0:  # a mutation the schema may or may not accept
        data[draw(st.sampled_from(sorted(data)))] = draw(junk)
    return data


@settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(results_files(), min_size=1, max_size=3))
def test_fuzzed_results_never_escape_out_nor_copy_outside_results(tmp_path_factory, files):
    root = tmp_path_factory.mktemp("fuzz")
    secret = root / "secret.png"
    secret.write_bytes(PNG + b" secret")
    (root / "outside").mkdir()
    (root / "outside" / "secret.png").write_bytes(PNG + b" outside")
    results = root / "results"
    out = root / "out"
    write_results(root / "seed" / "m" / "weekday_circle.json", fake_results("org/seed", 0.5))
    build(root / "seed", out)  # fuzzed results are merged into an existing leaderboard
    for i, data in enumerate(files):
        run = results / f"m{i}" / "run"
        run.mkdir(parents=True)
        (run / "good.png").write_bytes(PNG)
        (run / "fake.png").write_text("not a png")
        (run / "link.png").symlink_to(secret)
        (run / "linkdir").symlink_to(root / "outside", target_is_directory=True)
        data["artifacts"] = (
            [str(secret) if a == "SECRET" else a for a in data["artifacts"]]
            if isinstance(data.get("artifacts"), list)
            else data.get("artifacts")
        )
        write_raw(results / f"m{i}" / "run.json", data)
    before = {k: v for k, v in files_under(root).items() if not k.startswith("out/")}
    readable = {p.read_bytes() for p in results.rglob("*") if p.is_file() and not p.is_symlink() and not p.is_fifo()}

    build(results, out)

    assert {k: v for k, v in files_under(root).items() if not k.startswith("out/")} == before
    for path in out.rglob("*"):
        assert not path.is_symlink()
        if path.is_file() and path.suffix == ".png":
            assert path.read_bytes() in readable and path.read_bytes() == PNG
        elif path.suffix == ".json":
            strict_json(path.read_text())
    html = (out / "index.html").read_text()
    assert html.count("<script") == 2 and html.count("</script") == 2
    strict_json(html.split('id="leaderboard-data">')[1].split("</script>")[0])


def test_an_unmeasured_metric_reaches_the_board_and_a_bad_one_is_refused(tmp_path):
    """`unmeasured` is untrusted text: a key that is also measured, or a reason too long to show, refuses the file."""
    results = tmp_path / "results"
    ok = fake_results("ok", 0.5).model_dump(mode="python")
    ok["unmeasured"] = {"patch_gap": "no problem the model answers"}
    write_raw(results / "ok" / "weekday_circle.json", ok)
    for slug, unmeasured in [("twice", {"accuracy": "measured as well"}), ("long", {"patch_gap": "x" * 501})]:
        data = fake_results(slug, 0.1).model_dump(mode="python")
        data["unmeasured"] = unmeasured
        write_raw(results / slug / "weekday_circle.json", data)
    report = build(results, tmp_path / "lb")
    assert sorted(p.parent.name for p, _ in report.skipped) == ["long", "twice"]
    rows = board_rows(tmp_path / "lb", "weekday_circle")
    assert [r["unmeasured"] for r in rows.values()] == [{"patch_gap": "no problem the model answers"}]
