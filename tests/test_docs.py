"""The README is the contract: CI runs its test command, and its plugin example is the tested one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command():
    setup = code_blocks("bash")[:2]
    assert "harness run --task weekday_circle" in setup[0]
    test_command = setup[1].strip()
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_plugins_are_the_tested_plugins():
    plugin = ROOT / "tests" / "plugin_example"
    for name in ("__init__.py", "steering.py"):
        module = (plugin / "harness_opposites" / name).read_text()
        body = module.split('"""', 2)[2].strip()  # without the module docstring
        assert any(body == block.strip() for block in code_blocks("python")), name
    assert any((plugin / "pyproject.toml").read_text().strip() == block.strip() for block in code_blocks("toml"))


def test_readme_points_to_the_option_descriptions():
    assert "harness list TASK" in README
