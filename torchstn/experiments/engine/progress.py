"""A progress bar per epoch (tqdm), on the primary rank only."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm import tqdm

__all__ = ["Progress"]


class Progress:
    """``total`` steps of one epoch on stderr.

    On a terminal the bar and its text refresh twice a second; in a log (stderr not a
    terminal) it writes one line when the epoch starts and one when it ends. ``text`` is a
    callable so that metrics, which may live on a GPU, are read only when shown.
    """

    def __init__(self, total: int, label: str, enabled: bool = True):
        self.tty = sys.stderr.isatty()
        self.enabled = enabled
        self.bar = tqdm(total=total, desc=label, disable=not enabled, file=sys.stderr,
                        unit="batch", dynamic_ncols=True, leave=True,
                        mininterval=0.5 if self.tty else float("inf"))
        self.last = 0.0

    def update(self, done: int, text: Callable[[], str]) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty and now - self.last >= 0.5:
            self.last = now
            self.bar.set_postfix_str(text(), refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self, text: str) -> None:
        if not self.enabled:
            return
        self.bar.set_postfix_str(text, refresh=False)
        self.bar.close()  # shows the final state once
