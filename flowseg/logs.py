"""Logging for both commands: configured once, in the CLI, to stderr.

WARNING by default, -v INFO, -vv DEBUG, -q errors only. On a terminal the lines go through
rich (colour, times); in a pipe or under cron they are plain `prog: LEVEL message` lines.
"""

from __future__ import annotations

import logging
import sys


def setup_logging(prog: str, verbose: int, quiet: bool, debug: bool = False) -> None:
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2 or debug:
        level = logging.DEBUG
    if quiet:
        level = logging.ERROR
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{prog}: %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # sh logs every process it starts at INFO; that is our DEBUG.
    logging.getLogger("sh").setLevel(logging.WARNING)
