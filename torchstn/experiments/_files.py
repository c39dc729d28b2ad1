"""A temporary file beside its destination, for writes that end in an atomic rename."""

from __future__ import annotations

import os
import tempfile


def temp_beside(folder, prefix: str, suffix: str = "") -> tuple[int, str]:
    """``tempfile.mkstemp`` in ``folder``, with the mode a plain ``open`` would give.

    mkstemp creates its file readable by the owner only; renamed into place, results would
    keep that mode. Here they get 0o666 less the process umask, like any other new file.
    """
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp
