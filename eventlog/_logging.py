"""The library's loggers: structlog when the embedder configured it, else stdlib ``logging`` (quiet by default).

structlog's own default (nothing configured) prints every level, DEBUG included, to stdout: a library must not
do that to the program embedding it. A :class:`LibraryLogger` decides at each call:

- ``structlog.is_configured()``: the embedder set structlog up (the ``wantbuild`` CLI does): the event goes
  through their processors, exactly like a ``structlog.get_logger(name)`` logger;
- otherwise it goes to the stdlib logger of the same name (``wantbuild.actors``, ``wantbuild.eventlog``, ...),
  rendered as ``event key=value ...`` with any ``exc_info`` attached. Unconfigured, stdlib logging shows
  warnings and errors on stderr and nothing below; ``logging.getLogger("wantbuild").setLevel(...)`` and
  handlers control it as for any library.

The level is checked before anything is built, so a disabled ``debug`` on a hot path costs one method call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import structlog

__all__ = ["LibraryLogger", "get_logger"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
           "error": logging.ERROR, "exception": logging.ERROR, "critical": logging.CRITICAL,
           "fatal": logging.CRITICAL}


def _render(event: str, context: Mapping[str, Any]) -> str:
    if not context:
        return event
    return event + " " + " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in context.items())


class LibraryLogger:
    """A structlog-style logger (``debug``/``info``/``warning``/``error``/``exception``/``critical``, ``bind``)."""

    __slots__ = ("_context", "_name", "_std")

    def __init__(self, name: str, context: Mapping[str, Any] | None = None) -> None:
        self._name = name
        self._context: dict[str, Any] = dict(context or {})
        self._std = logging.getLogger(name)

    def bind(self, **values: Any) -> LibraryLogger:
        return LibraryLogger(self._name, {**self._context, **values})

    def enabled(self, method: str) -> bool:
        """Whether a ``method`` call (``"debug"``, ...) would emit: check it before paying for what the event needs
        (a logger bound per job run, say)."""
        if structlog.is_configured():
            level_of = getattr(structlog.get_config()["wrapper_class"], "get_effective_level", None)
            if level_of is None:
                return True
            try:
                return bool(_LEVELS[method] >= level_of(None))
            except TypeError:  # a wrapper whose method needs its instance: let it decide
                return True
        return self._std.isEnabledFor(_LEVELS[method])

    def _log(self, method: str, event: str, values: dict[str, Any]) -> None:
        if structlog.is_configured():
            # A level the configured wrapper filters out (make_filtering_bound_logger) is dropped here: binding
            # a structlog logger only to call its no-op cost ~5 us, a tenth of a no-op job run.
            level_of = getattr(structlog.get_config()["wrapper_class"], "get_effective_level", None)
            if level_of is not None:
                try:
                    if _LEVELS[method] < level_of(None):
                        return
                except TypeError:  # a wrapper whose method needs its instance: let it decide
                    pass
            getattr(structlog.get_logger(self._name, **self._context), method)(event, **values)
            return
        level = _LEVELS[method]
        std = self._std
        if not std.isEnabledFor(level):
            return
        exc_info = values.pop("exc_info", None)
        if method == "exception" and exc_info is None:
            exc_info = True
        std.log(level, _render(event, {**self._context, **values}), exc_info=exc_info)

    def debug(self, event: str, **values: Any) -> None:
        self._log("debug", event, values)

    def info(self, event: str, **values: Any) -> None:
        self._log("info", event, values)

    def warning(self, event: str, **values: Any) -> None:
        self._log("warning", event, values)

    warn = warning

    def error(self, event: str, **values: Any) -> None:
        self._log("error", event, values)

    def exception(self, event: str, **values: Any) -> None:
        self._log("exception", event, values)

    def critical(self, event: str, **values: Any) -> None:
        self._log("critical", event, values)

    def __repr__(self) -> str:
        return f"<LibraryLogger {self._name} {self._context!r}>"


def get_logger(name: str, **context: Any) -> LibraryLogger:
    """The logger for library code named ``name`` (``wantbuild.<part>``), see the module docstring."""
    return LibraryLogger(name, context)
