"""Publish a built leaderboard: to a folder (a git work tree gets a commit) or a hub dataset.

    harness leaderboard publish --to ../site/leaderboards
    harness leaderboard publish --to hf://datasets/ORG/NAME      # token from $HF_TOKEN
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness.errors import UsageError

HF_TARGET = re.compile(r"^hf://datasets/([\w.-]+/[\w.-]+)/?$")


def files_to_publish(board_dir: Path) -> list[Path]:
    """What a published leaderboard consists of: the JSON, the page, and the plots it links."""
    if not (board_dir / "index.json").exists():
        raise UsageError(f"no leaderboard in {board_dir}: run `harness leaderboard build` first")
    files = [p for p in sorted(board_dir.glob("*.json"))] + [board_dir / "index.html"]
    files += sorted(p for p in (board_dir / "assets").rglob("*") if p.is_file())
    return [p.relative_to(board_dir) for p in files if (board_dir / p).exists()]


def publish(board_dir: Path, to: str, dry_run: bool = False, api: Any = None) -> list[str]:
    """Send the leaderboard to `to`; return the relative paths sent (or that would be, with dry_run)."""
    files = [p.as_posix() for p in files_to_publish(board_dir)]
    if to.startswith("hf://"):
        match = HF_TARGET.match(to)
        if not match:
            raise UsageError(f"--to {to}: use hf://datasets/ORG/NAME (only dataset repos hold leaderboards)")
        if dry_run:
            return files
        token = os.environ.get("HF_TOKEN")
        if not token and api is None:
            raise UsageError("publishing to the hub needs a token: set HF_TOKEN (a write token of ORG)")
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
        api.create_repo(match.group(1), repo_type="dataset", exist_ok=True)
        api.upload_folder(
            repo_id=match.group(1), repo_type="dataset", folder_path=str(board_dir), allow_patterns=files,
            commit_message="Update leaderboards",
        )
        return files
    target = Path(to)
    if dry_run:
        return files
    for rel in files:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(board_dir / rel, target / rel)
    commit_if_work_tree(target, files)
    return files


def commit_if_work_tree(target: Path, files: list[str]) -> None:
    inside = subprocess.run(["git", "-C", str(target), "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        return
    subprocess.run(["git", "-C", str(target), "add", "--", *files], check=True, capture_output=True)
    staged = subprocess.run(["git", "-C", str(target), "diff", "--cached", "--quiet"])
    if staged.returncode != 0:
        subprocess.run(["git", "-C", str(target), "commit", "-q", "-m", "Update leaderboards"], check=True, capture_output=True)
