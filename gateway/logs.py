"""structlog set-up: JSON lines for machines, coloured console for people.

Every event is a dict with an ``event`` name and fields; the gateway never
formats messages itself so log pipelines can filter on fields.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]


def configure_logging(fmt: LogFormat = "auto", level: str = "info") -> None:
    """Configure structlog process-wide. ``auto`` picks console on a TTY, JSON otherwise."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=True)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=LineLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )


class LineLogger:
    """Writes each event as one line in one ``write`` call, then flushes.

    With ``--workers`` every process shares the supervisor's stdout. structlog's
    ``PrintLogger`` uses ``print``, which writes the text and its newline in two
    system calls, so another process's line could land between them and leave two
    events on one line (and a log pipeline unable to parse either).
    """

    def __init__(self, file: TextIO) -> None:
        self._file = file
        #: As structlog's PrintLogger: stdout is looked up at each write, so a
        #: replaced ``sys.stdout`` (pytest's capture) is followed.
        self._follows_stdout = file is sys.stdout
        self._lock = threading.Lock()  # decision threads log too

    def msg(self, message: str) -> None:
        out = sys.stdout if self._follows_stdout else self._file
        with self._lock:
            out.write(message + "\n")
            out.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class LineLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> LineLogger:
        return LineLogger(self._file)


def debug_enabled(logger: Any) -> bool:
    """True when debug events would be emitted; lets hot paths skip building them."""
    return bool(logger.is_enabled_for(logging.DEBUG))
