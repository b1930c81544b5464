"""The job graph's errors, in a module of their own so that patterns, jobs and the graph can all raise them.

All are re-exported by ``supervisor``::

    WantbuildError
     ├── GraphError(ValueError)      a graph definition that cannot be used; names the job(s) and the fix
     ├── NoJobForRef(LookupError)    no job produces the ref that was asked for
     └── UnknownJob(KeyError)        no job has that name
"""

from __future__ import annotations

from eventlog._errors import WantbuildError

__all__ = ["GraphError", "NoJobForRef", "UnknownJob"]


class GraphError(WantbuildError, ValueError):
    """A graph definition that cannot be used. The message names the job(s) and says how to fix it."""


class NoJobForRef(WantbuildError, LookupError):
    """No job of the graph produces the ref."""

    def __init__(self, ref: str, message: str) -> None:
        self.ref = ref
        super().__init__(message)

    def __reduce__(self) -> tuple[type[NoJobForRef], tuple[str, str]]:
        return type(self), (self.ref, str(self))


class UnknownJob(WantbuildError, KeyError):
    """No job has the given name."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return self.message

    def __reduce__(self) -> tuple[type[UnknownJob], tuple[str, str]]:
        return type(self), (self.name, self.message)
