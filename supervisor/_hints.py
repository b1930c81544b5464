"""Small helpers every layer above the supervisor shares for its error messages.

- :func:`did_you_mean` / :func:`valid_choices`: the "did you mean 'daily'? valid: ..." part of an error about an
  unknown name (a job, a TOML key, an event type, a bundled scenario);
- :func:`sole_error`: the one real error inside nested exception groups, so that a task group never turns a
  user's error into a traceback or an unreadable group.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean", "sole_error", "valid_choices"]


def did_you_mean(word: str, choices: Iterable[str], *, n: int = 1) -> str:
    """``"did you mean 'daily'?"``: the (up to ``n``) ``choices`` closest to ``word``; ``""`` if none is close."""
    close = difflib.get_close_matches(word, list(choices), n=n)
    return f"did you mean {', '.join(map(repr, close))}?" if close else ""


def valid_choices(word: str, choices: Iterable[str], *, label: str = "valid") -> str:
    """``"did you mean 'daily'? valid: raw, daily"``: what follows ``unknown field 'dayly';`` in a message."""
    choices = list(choices)
    hint = did_you_mean(word, choices)
    return f"{hint} {label}: {', '.join(choices)}" if hint else f"{label}: {', '.join(choices)}"


def sole_error(e: BaseException) -> BaseException | None:
    """The one exception in ``e`` and its nested exception groups that is not a cancellation; None if there are
    none or several (``e`` itself when it is not a group and not a cancellation).

    The runtime runs on asyncio (aiosqlite needs it), so a cancellation is an :class:`asyncio.CancelledError`; this
    does not ask anyio, so it works outside an event loop too (the CLI's error handler runs after the loop ended).
    """
    leaves: list[BaseException] = []

    def walk(x: BaseException) -> None:
        if isinstance(x, BaseExceptionGroup):
            for inner in x.exceptions:
                walk(inner)
        elif not isinstance(x, asyncio.CancelledError):
            leaves.append(x)

    walk(e)
    return leaves[0] if len(leaves) == 1 else None
