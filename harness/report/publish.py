"""Publish a built leaderboard: to a folder (a git work tree gets a commit) or a hub dataset.

    harness leaderboard publish --to ../site/leaderboards
    harness leaderboard publish --to hf://datasets/ORG/NAME      # token from $HF_TOKEN

Only the leaderboard is sent: index.json, the page, the findings, the boards the index lists
and every plot the page links (rows', comparisons' and the per-layer charts), each a regular
file inside the leaderboard folder, which must hold no symbolic link. Publishing is checked
whole before anything is written: every file is read first, and every destination must be
reached through real folders of the target (no link, no file where a folder is needed), so
a refusal leaves the target as it was. Nothing at the target is deleted, and a commit in a
git work tree holds those files only, never what the user had staged.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.errors import UsageError
from harness.report.assets import ASSET_PATH, is_asset
from harness.report.boards import TaskBoards
from harness.results.validate import MAX_JSON_BYTES, task_name_ok
from harness.safepath import UnsafePath, check_plain_path, links_in, read_plain_file, safe_join, write_file_atomic

HF_TARGET = re.compile(r"^hf://datasets/([\w.-]+/[\w.-]+)/?$")
COMMIT_MESSAGE = "Update leaderboards"


def files_to_publish(board_dir: Path) -> list[str]:
    """The leaderboard's files, relative to board_dir: the JSON, the page, and the plots it links."""
    if not (board_dir / "index.json").is_file():
        raise UsageError(f"no leaderboard in {board_dir}: run `harness leaderboard build` first")
    links = links_in(board_dir, limit=1)
    if links:
        raise UsageError(
            f"{board_dir} holds a symbolic link ({links[0]}), which publish never follows: "
            "remove it and run `harness leaderboard build` again"
        )
    try:
        index = json.loads(read_plain_file(safe_join(board_dir, "index.json"), MAX_JSON_BYTES))
        names = [t["task"] for t in index["tasks"]]
        if not all(isinstance(n, str) and task_name_ok(n) for n in names):
            raise ValueError("a task name that cannot name a file")
        boards = [
            TaskBoards.model_validate_json(read_plain_file(safe_join(board_dir, f"{n}.json"), MAX_JSON_BYTES)) for n in names
        ]
    except (UnsafePath, ValidationError, ValueError, KeyError, TypeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"the leaderboard in {board_dir} is damaged ({reason}): run `harness leaderboard build` again") from None
    if not names:
        raise UsageError(f"nothing to publish: the leaderboard in {board_dir} has no tasks; build it from results first")
    linked = {a for b in boards for board in b.boards for row in board.rows for a in row.artifacts}
    linked |= {a for b in boards for view in b.comparisons for a in view.artifacts}
    linked |= {t["chart"] for t in index["tasks"] if isinstance(t.get("chart"), str)}
    page = ["index.html"] if (board_dir / "index.html").is_file() else []
    if page:  # whatever else the page links, so a published page shows every picture it names
        try:
            linked |= {
                m.group(0) for m in ASSET_PATH.finditer(read_plain_file(board_dir / "index.html", MAX_JSON_BYTES).decode("utf-8"))
            }
        except (UnsafePath, UnicodeDecodeError) as e:
            raise UsageError(
                f"the page {board_dir}/index.html cannot be read ({e}): run `harness leaderboard build` again"
            ) from None
    assets = {a for a in linked if is_asset(board_dir, a)}
    findings = ["findings.json"] if (board_dir / "findings.json").is_file() else []
    return ["index.json", *page, *findings, *(f"{n}.json" for n in names), *sorted(assets)]


def publish(board_dir: Path, to: str, dry_run: bool = False, api: Any = None) -> list[str]:
    """Send the leaderboard to `to`; return the relative paths sent (or that would be, with dry_run)."""
    match = HF_TARGET.match(to)
    if to.startswith("hf://") and not match:
        raise UsageError(f"--to {to}: use hf://datasets/ORG/NAME (only dataset repos hold leaderboards)")
    target = Path(to)
    if not match and target.exists() and not target.is_dir():
        raise UsageError(f"--to {to} is a file: name a folder (a git work tree gets a commit) or hf://datasets/ORG/NAME")
    files = files_to_publish(board_dir)
    if dry_run:
        return files
    if match:
        return upload(board_dir, match.group(1), files, api)
    writes = []
    for rel in files:  # everything read and every destination checked before the first write
        try:
            data = read_plain_file(safe_join(board_dir, rel), MAX_JSON_BYTES)
        except UnsafePath as e:
            raise UsageError(f"cannot publish {rel}: {e}; run `harness leaderboard build` again") from None
        try:
            dest = check_plain_path(target, rel) if target.exists() else target / rel
        except UnsafePath as e:
            raise UsageError(
                f"cannot publish into {target}: {e}, which publish never writes through; "
                "remove it or publish to another folder (nothing was written)"
            ) from None
        writes.append((dest, data))
    target.mkdir(parents=True, exist_ok=True)
    in_git = is_work_tree(target)
    if in_git:
        check_identity(target)
    for dest, data in writes:
        write_file_atomic(dest, data)
    if in_git:
        commit(target, files)
    return files


def upload(board_dir: Path, repo_id: str, files: list[str], api: Any) -> list[str]:
    """One hub commit with exactly these files (their names hold no glob characters, so patterns match only them)."""
    token = os.environ.get("HF_TOKEN")
    if not token and api is None:
        raise UsageError("publishing to the hub needs a token: set HF_TOKEN (a write token of ORG)")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(board_dir),
        allow_patterns=files,
        commit_message=COMMIT_MESSAGE,
    )
    return files


def git(target: Path, *args: str, paths: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run git in target; `paths` go through stdin as literal pathspecs (no globbing, no argument-length limit)."""
    cmd = ["git", "--literal-pathspecs", "-C", str(target), *args]
    if paths is not None:
        cmd += ["--pathspec-from-file=-", "--pathspec-file-nul"]
    stdin = "".join(p + "\0" for p in paths) if paths is not None else None
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True)


def is_work_tree(target: Path) -> bool:
    inside = git(target, "rev-parse", "--is-inside-work-tree")
    return inside.returncode == 0 and inside.stdout.strip() == "true"


def check_identity(target: Path) -> None:
    """Refuse before copying anything when git could not sign the commit."""
    for ident in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
        if git(target, "var", ident).returncode != 0:
            raise UsageError(
                f"git in {target} has no identity to commit with: set `git config user.name` and `git config user.email` there"
            )


def commit(target: Path, files: list[str]) -> None:
    """Commit these files only: whatever else the user had staged stays staged and out of the commit."""
    added = git(target, "add", paths=files)
    staged = git(target, "diff", "--cached", "--name-only", "-z", "--relative")
    if added.returncode == 0 and staged.returncode == 0 and not set(staged.stdout.split("\0")) & set(files):
        return  # nothing changed: no empty commit
    done = added if added.returncode != 0 else git(target, "commit", "-q", "--only", "-m", COMMIT_MESSAGE, paths=files)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise UsageError(f"git could not commit in {target} ({reason}): the files are copied; commit them by hand")
