"""The sub-packages are layers, and the imports keep them so: the engine knows nothing of the run
or the reports; the reports and the results contract know nothing of the engine, nor of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import harness

ROOT = Path(__file__).parent.parent
LAYERS = {  # package -> what none of its modules may import
    "harness.engine": ("harness.run", "harness.report", "harness.api"),
    "harness.results": ("harness.engine", "harness.run", "harness.report", "harness.api", "torch"),
    "harness.report": ("harness.engine", "harness.run", "harness.api", "torch", "transformers", "peft"),
    "harness.api": ("harness.run", "harness.report"),
}


def imported_modules(source: str, package: str) -> list[tuple[str, int]]:
    """Every module a file imports, with `from harness import Name` resolved to the module Name lives in."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module == "harness":
                found += [
                    (harness._EXPORTS.get(a.name) or harness._MODULES.get(a.name) or f"harness.{a.name}", node.lineno)
                    for a in node.names
                ]
            else:
                found.append((module, node.lineno))
    return [(harness.MOVED.get(m, m), line) for m, line in found]


def violations(source: str, package: str, file: str = "<source>") -> list[str]:
    forbidden = LAYERS[package]
    return [
        f"{file}:{line} imports {m}"
        for m, line in imported_modules(source, package)
        if any(m == f or m.startswith(f + ".") for f in forbidden)
    ]


def test_each_layer_imports_only_what_lies_below_it():
    bad = []
    for package in LAYERS:
        folder = ROOT / package.replace(".", "/")
        for path in sorted(folder.rglob("*.py")):
            bad += violations(path.read_text(), package, str(path.relative_to(ROOT)))
    assert not bad, "\n".join(bad)


def test_the_check_finds_a_forbidden_import():
    assert violations("from harness.run import runner\n", "harness.engine")
    assert violations("import torch\n", "harness.report")
    assert violations("from harness import Model\n", "harness.report")  # the lazy export lives in the engine
    assert violations("from ..engine import models\n", "harness.results")
    assert violations("from harness.models import load_model\n", "harness.report")  # a flat path is followed too
    assert not violations("from harness.results import Results\nfrom harness.errors import UsageError\n", "harness.report")


def test_reading_results_and_building_leaderboards_never_import_torch():
    code = (
        "import sys, harness.report.build, harness.report.publish, harness.results.validate, harness.results.compare; "
        "from harness import UsageError, Metric; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_python_dash_m_harness_is_the_command():
    out = subprocess.run([sys.executable, "-m", "harness", "list"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "weekday_circle" in out and "number_helix" in out
