"""Files named by untrusted text (a results file, a leaderboard file): join, read and write safely.

Every path the leaderboard code writes to or reads from on behalf of a results file is made
by `safe_join`, so "stays inside `--out`" is true by construction rather than by each
caller's care; reads never follow a final symbolic link and writes replace one instead of
writing through it. A folder the leaderboard code owns (`--out`, the folder being published)
must hold no symbolic link at all (`links_in`), and a folder it writes into (`--to`) must
reach every file it writes through real folders only (`check_plain_path`): a link planted in
either can never redirect a read, a write or a deletion to somewhere else.
"""

from __future__ import annotations

import itertools
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

MAX_COMPONENT_BYTES = 255  # the usual file-name limit; longer names would fail with an OS error


class UnsafePath(ValueError):
    """A relative path from untrusted input that would leave its folder or cannot name a file."""


def safe_join(base: Path, *parts: str) -> Path:
    """`base` joined with slash-separated relative `parts`, refused unless it stays inside `base`.

    Refuses absolute paths, empty, `.` and `..` components, backslashes and NUL bytes, and
    names longer than a file system allows; then resolves symbolic links and refuses the
    result if it lands outside `base` (a link planted in the folder cannot redirect a write).
    """
    components: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise UnsafePath(f"{part!r} is not a path")
        for name in part.split("/"):
            if name in ("", ".", "..") or "\\" in name or "\0" in name:
                raise UnsafePath(f"{part!r} is not a plain relative path")
            if len(name.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
                raise UnsafePath(f"{part[:40]!r}... has a name too long for a file")
            components.append(name)
    if not components:
        raise UnsafePath("empty path")
    joined = base.joinpath(*components)
    try:
        inside = joined.resolve().is_relative_to(base.resolve())
    except (OSError, RuntimeError) as e:  # a symbolic-link loop, an unreadable folder
        raise UnsafePath(f"{'/'.join(components)!r} cannot be resolved ({e})") from None
    if not inside:
        raise UnsafePath(f"{'/'.join(components)!r} leads outside {base}")
    return joined


def entries(folder: Path) -> Iterator[tuple[Path, bool]]:
    """Every file and folder below `folder` (sorted within each folder), with whether it is a
    symbolic link; a linked folder is named but never entered, so the walk never leaves `folder`.

    `folder` itself may be a link: the user named it.
    """
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(top, name)
            yield path, path.is_symlink()
        dirs[:] = sorted(d for d in dirs if not Path(top, d).is_symlink())


def links_in(folder: Path, limit: int = 10) -> list[str]:
    """The symbolic links below `folder` (relative, slash-separated; at most `limit`), never following one."""
    links = (path.relative_to(folder).as_posix() for path, link in entries(folder) if link)
    return list(itertools.islice(links, limit))


def check_plain_path(base: Path, rel: str) -> Path:
    """`base/rel` if every folder from below `base` down to it is a real folder and the file is not a link.

    For writing into a folder that may hold links of its owner's (a publish target): a file
    written there must not land elsewhere through one, nor replace a folder.
    """
    path = safe_join(base, rel)
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        here = base.joinpath(*parts[:i])
        if here.is_symlink():
            raise UnsafePath(f"{'/'.join(parts[:i])} is a symbolic link")
        if i < len(parts) and here.exists() and not here.is_dir():
            raise UnsafePath(f"{'/'.join(parts[:i])} is a file where a folder is needed")
    if path.is_dir():
        raise UnsafePath(f"{rel} is a folder")
    return path


def read_plain_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of `path` if it is a regular file (not a symbolic link) of at most `max_bytes`.

    Opened without following a final link and checked on the open descriptor, so the file
    checked is the file read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        reason = "a symbolic link" if path.is_symlink() else (e.strerror or "unreadable").lower()
        raise UnsafePath(f"{path.name}: {reason}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(f"{path.name}: not a regular file")
        if info.st_size > max_bytes:
            raise UnsafePath(f"{path.name}: {info.st_size} bytes, over the limit of {max_bytes}")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafePath(f"{path.name}: over the limit of {max_bytes} bytes")
    return data


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename over it.

    The rename replaces a symbolic link at `path` instead of writing through it, and a reader
    sees the old file or the new one, never half of it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
