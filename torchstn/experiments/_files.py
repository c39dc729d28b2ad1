"""Atomic writes: a temporary file beside the destination, then a rename."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "remove_temps", "temp_beside"]


# What atomic_write names its temporary files: ".<name>.torchstn-tmp-" + mkstemp's 8
# characters + the suffix (kept, so that writers that go by it, like matplotlib, work).
_TEMP_MARK = ".torchstn-tmp-"
_TEMP = re.compile(r"\..+\.torchstn-tmp-[a-z0-9_]{8}(\.[A-Za-z0-9]+)?")


def _plain_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temp_beside(folder, prefix: str, suffix: str = "") -> tuple[int, str]:
    """``tempfile.mkstemp`` in ``folder``, with the mode a plain ``open`` would give.

    mkstemp creates its file readable by the owner only; renamed into place, results would
    keep that mode. Here they get 0o666 less the process umask, like any other new file.
    """
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    os.chmod(tmp, _plain_mode())
    return fd, tmp


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it into place.

    A failure leaves neither a half-written ``path`` nor the temporary file. The result
    gets a plain file's mode even if ``write`` replaced the temporary file (safetensors
    does, with mode 0o600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path.parent, f".{path.name}{_TEMP_MARK}", path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _plain_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of :func:`atomic_write` that a killed process left in
    ``folder`` (writes cut off before their rename); return them. No other file matches."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = [p for p in folder.iterdir() if p.is_file() and _TEMP.fullmatch(p.name)]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone
