"""Logging for both commands: configured once, in the CLI, to stderr (or syslog).

WARNING by default, -v INFO, -vv DEBUG, -q errors only. Where the lines go:

- on a terminal, through rich (colour unless NO_COLOR is set, times);
- under systemd (stderr is the journal stream named by JOURNAL_STREAM), as `<N>message` lines,
  which journald files at syslog priority N (sd-daemon(3) prefixes), without our own prefix;
- with FLOWSEG_LOG=syslog, to the local syslog socket /dev/log (facility daemon);
- otherwise (pipes, cron) as plain `prog: LEVEL message` lines.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
            logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{PRIORITY.get(record.levelno, 6)}>{record.getMessage()}"


def stderr_is_journal() -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def make_handler(prog: str) -> logging.Handler:
    if os.environ.get("FLOWSEG_LOG") == "syslog" and os.path.exists("/dev/log"):
        handler: logging.Handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter(f"{prog}[{os.getpid()}]: %(message)s"))
        return handler
    if stderr_is_journal():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter())
        return handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        return handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(levelname)s %(message)s"))
    return handler


def setup_logging(prog: str, verbose: int, quiet: bool, debug: bool = False) -> None:
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2 or debug:
        level = logging.DEBUG
    if quiet:
        level = logging.ERROR
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(prog))
    root.setLevel(level)
    # sh logs every process it starts at INFO; that is our DEBUG.
    logging.getLogger("sh").setLevel(logging.WARNING)
