"""Progress bars that stay readable in a terminal and in a log file."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(iterable=None, desc: str = "", enabled: bool = True, total: int | None = None):
    """A tqdm bar; redrawn often on a terminal, every 15 s when stderr is a file (logs stay short)."""
    tty = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True,
                mininterval=0.2 if tty else 15.0)
