"""The README is the front door and the contract: CI runs its test command; docs/ holds the reference,
whose plugin example is the tested one and whose task pages are generated from the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
PLUGINS = (ROOT / "docs" / "plugins.md").read_text()


def code_blocks(lang: str, text: str = README) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    setup = code_blocks("bash")[:2]
    assert "harness run --task weekday_circle" in setup[0]
    test_command = setup[1].strip()
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_documented_plugins_are_the_tested_plugins():
    plugin = ROOT / "tests" / "plugin_example"
    for name in ("__init__.py", "steering.py"):
        module = (plugin / "harness_opposites" / name).read_text()
        body = module.split('"""', 2)[2].strip()  # without the module docstring
        assert any(body == block.strip() for block in code_blocks("python", PLUGINS)), name
    assert any((plugin / "pyproject.toml").read_text().strip() == block.strip() for block in code_blocks("toml", PLUGINS))


def test_readme_points_to_the_option_descriptions():
    assert "harness list TASK" in README


def test_every_link_in_the_readme_and_docs_leads_to_a_file():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "\n".join(broken)


def test_every_task_has_a_page_that_says_what_its_code_says():
    from harness.run import docs

    tasks = docs.builtin_tasks()
    assert len(tasks) == 9
    for name, task in tasks.items():
        path = docs.DOCS / f"{name}.md"
        assert path.exists(), f"no page {path}: run python -m harness.run.docs"
        assert path.read_text() == docs.page(task, path.read_text()), f"{path} is stale: run python -m harness.run.docs"
        assert f"[`{name}`](docs/tasks/{name}.md)" in README


def test_the_readme_is_a_front_door():
    assert len(README.splitlines()) < 250
