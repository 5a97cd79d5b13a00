"""Build and publish never touch anything outside `--out` / `--to`, however links are planted.

A leaderboard folder can come from a contributor's pull request, and a publish target is
someone's site: a symbolic link in either must never let a read, a write or a clean-up reach
a file elsewhere (the user's weights cache has the very layout the old clean-up deleted by
pattern). Clean-up deletes only the plots a build recorded in its manifest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.report.build import MANIFEST, build
from harness.report.publish import publish
from harness.results import write_results
from harness.run.cli import main
from tests.report.test_leaderboard import PNG, fake_results, results_dir  # noqa: F401  (fixture)


def snapshot(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry below root with its kind and bytes (links by target), to prove nothing changed."""
    out = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(top, name)
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p).encode())
            elif p.is_file():
                out[rel] = ("file", p.read_bytes())
            else:
                out[rel] = ("dir", b"")
    return out


def outside(tmp_path: Path) -> Path:
    """A folder shaped like the weights cache (16-hex-digit folders with files), outside every leaderboard."""
    victim = tmp_path / "victim"
    (victim / "0123456789abcdef").mkdir(parents=True)
    (victim / "0123456789abcdef" / "f").write_text("d")
    (victim / "0123456789abcdef" / "plot.png").write_bytes(PNG)
    (victim / "weekday_circle.json").write_text(json.dumps({"task": "weekday_circle", "boards": []}))
    (victim / "index.json").write_text("{}")
    return victim


def test_the_reported_reproduction_leaves_the_outside_folder_untouched(tmp_path):
    lb, victim, results = tmp_path / "L", tmp_path / "V", tmp_path / "R"
    (lb / "assets").mkdir(parents=True)
    (victim / "0123456789abcdef").mkdir(parents=True)
    results.mkdir()
    (victim / "0123456789abcdef" / "f").write_text("d")
    (lb / "index.json").write_text('{"leaderboard_version":1,"tasks":[]}')
    (lb / "assets" / "t").symlink_to(victim)
    before = snapshot(victim)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.run.cli", "leaderboard", "build", "--results", str(results), "--out", str(lb)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "symbolic link (assets/t)" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert snapshot(victim) == before


LINK_PLACES = [
    "assets",
    "assets/weekday_circle",
    "assets/weekday_circle/0123456789abcdef",
    "assets/weekday_circle/0123456789abcdef/plot.png",
    "assets/charts",
    "assets/charts/weekday_circle-layers.png",
    "weekday_circle.json",
    "findings.json",
    "index.html",
    "assets/built.json",
    "deeper/still/link",
]


@pytest.mark.parametrize("place", LINK_PLACES)
def test_a_link_at_any_depth_of_out_is_refused_before_anything_is_read_or_written(tmp_path, results_dir, place):
    out = tmp_path / "lb"
    build(results_dir, out)
    victim = outside(tmp_path)
    target = victim / "0123456789abcdef" if not place.endswith((".png", ".json", ".html", "link")) else victim / "index.json"
    link = out / place
    if link.is_dir() and not link.is_symlink():
        os.rename(link, tmp_path / "moved")  # the real folder steps aside for the planted link
    else:
        link.unlink(missing_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    before_out, before_victim = snapshot(out), snapshot(victim)
    with pytest.raises(UsageError, match=f"symbolic link \\({place}\\)"):
        build(results_dir, out)
    assert snapshot(victim) == before_victim and snapshot(out) == before_out
    with pytest.raises(UsageError, match="symbolic link"):
        publish(out, str(tmp_path / "site"))
    assert not (tmp_path / "site").exists() and snapshot(victim) == before_victim


def test_links_in_the_results_folder_are_skipped_by_name_never_followed(tmp_path):
    victim = outside(tmp_path)
    hidden = tmp_path / "elsewhere"
    write_results(hidden / "m" / "weekday_circle.json", fake_results("org/hidden", 0.9))
    results = tmp_path / "results"
    write_results(results / "real" / "weekday_circle.json", fake_results("org/real", 0.5))
    (results / "linked").symlink_to(hidden / "m")
    (results / "file.json").symlink_to(hidden / "m" / "weekday_circle.json")
    (results / "_compare").mkdir()
    (results / "_compare" / "c.json").symlink_to(victim / "index.json")
    before = snapshot(victim)
    report = build(results, tmp_path / "lb")
    assert [p.name for p in report.used] == ["weekday_circle.json"]
    skipped = {p.name: reason for p, reason in report.skipped}
    assert all(skipped[name] == "a symbolic link, not followed" for name in ("linked", "file.json", "c.json")), skipped
    models = json.loads((tmp_path / "lb" / "weekday_circle.json").read_text())["boards"][0]["rows"]
    assert [r["model"] for r in models] == ["org/real"] and snapshot(victim) == before


def test_clean_up_deletes_only_the_plots_the_build_recorded(tmp_path):
    results = tmp_path / "results"
    (results / "m" / "weekday_circle").mkdir(parents=True)
    (results / "m" / "weekday_circle" / "p.png").write_bytes(PNG + b"first")
    write_results(
        results / "m" / "weekday_circle.json",
        fake_results("org/m", 0.5, artifacts=["weekday_circle/p.png"], created="2026-11-20T10:00:00+00:00"),
    )
    out = tmp_path / "lb"
    build(results, out)
    [first] = json.loads((out / MANIFEST).read_text())["files"][:1] or [None]
    assert first and first.startswith("assets/weekday_circle/") and (out / first).is_file()
    # files of the user's, one shaped exactly like a build's plot, which no manifest lists
    mine = out / "assets" / "weekday_circle" / "fedcba9876543210"
    mine.mkdir()
    (mine / "plot.png").write_bytes(PNG + b"mine")
    (out / "assets" / "keep.txt").write_text("mine")
    # a newer run of the same row replaces the plot
    (results / "m" / "weekday_circle" / "p.png").write_bytes(PNG + b"second")
    write_results(
        results / "m" / "weekday_circle.json",
        fake_results("org/m", 0.5, artifacts=["weekday_circle/p.png"], created="2026-11-21T10:00:00+00:00"),
    )
    report = build(results, out)
    assert first in report.removed and not (out / first).exists() and not (out / first).parent.exists()
    assert (mine / "plot.png").read_bytes() == PNG + b"mine" and (out / "assets" / "keep.txt").read_text() == "mine"
    files = json.loads((out / MANIFEST).read_text())["files"]
    assert first not in files and all((out / f).is_file() for f in files)


def test_a_hostile_manifest_cannot_name_files_outside_assets(tmp_path, results_dir):
    out = tmp_path / "lb"
    build(results_dir, out)
    (out / "keep.txt").write_text("{}")
    (out / "assets" / "mine.png").write_bytes(PNG)
    (out / MANIFEST).write_text(
        json.dumps({"files": ["../keep.txt", "/etc/hostname", "keep.txt", "assets/../keep.txt", "assets/mine.png", {"x": 1}]})
    )
    report = build(results_dir, out)
    assert (out / "keep.txt").read_text() == "{}"
    assert report.removed == ["assets/mine.png"]  # named by the manifest as a build's own, and linked by no board: the only one


def test_publish_checks_the_whole_target_before_writing_anything(tmp_path, results_dir):
    out = tmp_path / "lb"
    build(results_dir, out)
    victim = outside(tmp_path)
    for place in ["assets", "assets/weekday_circle", "index.html", "weekday_circle.json", "findings.json"]:
        site = tmp_path / f"site-{place.replace('/', '-')}"
        site.mkdir()
        (site / "mine.txt").write_text("mine")
        link = site / place
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(victim / ("0123456789abcdef" if "." not in place else "index.json"))
        before_site, before_victim = snapshot(site), snapshot(victim)
        with pytest.raises(UsageError, match="nothing was written"):
            publish(out, str(site))
        assert snapshot(site) == before_site and snapshot(victim) == before_victim, place


def test_publish_refuses_a_file_where_it_needs_a_folder_before_writing(tmp_path, results_dir):
    out = tmp_path / "lb"
    build(results_dir, out)
    site = tmp_path / "site"
    site.mkdir()
    (site / "assets").write_text("a file")
    with pytest.raises(UsageError, match="a file where a folder is needed"):
        publish(out, str(site))
    assert sorted(p.name for p in site.iterdir()) == ["assets"]


def test_publish_sends_every_plot_the_page_links_comparisons_too(tmp_path):
    from tests.results.test_compare import comparison_folder

    results, _ = comparison_folder(tmp_path)
    out = tmp_path / "lb"
    build(results, out)
    board = json.loads((out / "toy.json").read_text())
    plots = [a for view in board["comparisons"] for a in view["artifacts"]]
    assert plots
    sent = publish(out, str(tmp_path / "site"))
    assert set(plots) <= set(sent) and all((tmp_path / "site" / p).is_file() for p in plots)


def test_cli_build_with_a_link_is_one_line_exit_2(tmp_path, results_dir, capsys):
    out = tmp_path / "lb"
    build(results_dir, out)
    (out / "x").symlink_to(tmp_path)
    assert main(["leaderboard", "build", "--results", str(results_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness: error:") and "symbolic link (x)" in err and len(err.splitlines()) == 1
