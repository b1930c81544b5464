"""Partitions of another graph: ``GRAPH:REF`` refs, built by the runtime that serves that graph's log.

Each graph has its own log (a SQLite file, or a PostgreSQL schema) and its own runtime, possibly on other
machines. A graph names the graphs it reads from (``graph.upstream("events", db=URL)``, a graph file's
``[upstream.events] db = "..."``), and a job of it may then report ``events:daily/2026-11-02`` missing, or declare
it as a static dependency: the partition ``daily/2026-11-02`` of graph ``events``.

Such a ref is an ordinary partition of *this* graph, produced by a built-in **upstream job** (``upstream.events``,
one per named graph, with the patterns ``events:{p0}``, ``events:{p0}/{p1}``, ... up to :data:`MAX_SEGMENTS`). Its
run does not build anything: it puts a want for the refs into the upstream log's command inbox (where that
graph's runtime takes it, now or when it next runs), then waits for that want through the upstream log (following
its commits: LISTEN/NOTIFY on PostgreSQL, polling on SQLite), and succeeds when the want is Successful, fails
when it ends otherwise (saying how). So everything the runtime does for a partition holds for another graph's:
a derived want, waiting (UpstreamWaiting), a cycle check, failure propagation, recovery after a crash (a Lost
upstream run is run again: its new want joins the upstream build, or succeeds at once if it is Live), and
cancellation (a canceled upstream run cancels its want there). Because the upstream job's patterns are checked
against the graph's other jobs like any job's, a graph whose own patterns could produce ``events:...`` refs is
refused when it is loaded: the ref syntax is never ambiguous.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Final, Protocol, cast

import anyio

from actors import WantStatus, World
from eventlog import Log, LogNotFoundError, LogUnreachableError, get_logger, open_log, redact

from ._execution import JobContext
from ._hints import sole_error

log = get_logger("wantbuild.upstream")

MAX_SEGMENTS: Final = 16
"""The most ``/``-separated segments an upstream ref may have after ``GRAPH:``."""

_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,62}")
_WAKE: Final = 5.0
"""Look at the upstream want at least this often, even without a commit to wake the follower."""


def check_upstream_name(name: object) -> str:
    """``name`` if it is a valid upstream graph name, else ValueError naming the rule."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid upstream graph name {name!r}: 1-63 characters, a lowercase letter first, then "
                         "lowercase letters, digits or '_' (it is the prefix of its refs: NAME:daily/2026-11-02)")
    return name


def upstream_patterns(name: str) -> list[str]:
    """The output patterns of the upstream job for graph ``name``: ``name:{p0}``, ``name:{p0}/{p1}``, ..."""
    return [f"{name}:" + "/".join(f"{{p{i}}}" for i in range(n)) for n in range(1, MAX_SEGMENTS + 1)]


def split_upstream(ref: str) -> tuple[str, str]:
    """``("events", "daily/2026-11-02")`` for ``events:daily/2026-11-02``."""
    graph, _, inner = ref.partition(":")
    return graph, inner


class UpstreamLink(Protocol):
    """How an upstream run reaches the graph it wants partitions of: want refs there, wait, cancel.

    The default (:class:`LogLink`) goes through that graph's log (its command inbox, then following its commits);
    another link may reach that graph's runtime directly (``scenarios`` wires graphs on one simulated clock so).
    """

    async def want(self, ctx: JobContext, refs: list[str], *, source: str, comment: str) -> object:
        """Ask for ``refs`` there; returns a token for :meth:`wait` and :meth:`cancel`. Raises if refused."""
        ...

    async def wait(self, ctx: JobContext, token: object, refs: list[str]) -> None:
        """Return when that want is Successful; raise (saying how it ended) when it ends otherwise."""
        ...

    async def cancel(self, token: object, reason: str) -> None:
        """Cancel that want (best effort: this run was canceled)."""
        ...


class UpstreamRun:
    """The run function of the upstream job for one graph: want the refs there, wait for that want.

    ``link`` reaches the other graph; None (the default) goes through its log ``db`` (:class:`LogLink`)."""

    def __init__(self, name: str, db: str, downstream: str, link: UpstreamLink | None = None) -> None:
        self.name = name
        self.db = db
        self.downstream = downstream
        self.link = link

    def __repr__(self) -> str:
        return f"UpstreamRun({self.name!r})"

    async def __call__(self, ctx: JobContext) -> None:
        refs = [split_upstream(ref)[1] for ref in ctx.partitions]
        if self.link is not None:
            await self._want(ctx, self.link, refs)
            return
        told: set[str] = set()
        while True:
            opened = False
            try:
                async with open_log(self.db, writer=False) as up:
                    opened = True
                    await self._want(ctx, LogLink(self.name, up), refs)
                return
            except (LogNotFoundError, LogUnreachableError) as e:
                if opened:
                    raise
                # Its runtime never ran yet (it creates the log when it first does), or its database is down for
                # a while: wait, as for a build that takes long.
                what = ("upstream log not created yet; waiting for its runtime" if isinstance(e, LogNotFoundError)
                        else "upstream log unreachable; retrying")
                if what not in told:
                    log.warning(what, graph=self.name, log=redact(self.db), error=str(e))
                    told.add(what)
                await ctx.sleep(1.0)

    async def _want(self, ctx: JobContext, link: UpstreamLink, refs: list[str]) -> None:
        """Want the refs through ``link``, wait for that want; if this run is canceled, cancel the want there too."""
        token = await link.want(ctx, refs, source=f"graph:{self.downstream}",
                                comment=f"wanted by graph {self.downstream!r}, run {ctx.job_run_id}")
        try:
            await link.wait(ctx, token, refs)
        except anyio.get_cancelled_exc_class():
            with contextlib.suppress(Exception), anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await link.cancel(token, f"its run {ctx.job_run_id} in graph {self.downstream!r} was canceled")
            raise


class LogLink:
    """The default :class:`UpstreamLink`: through the upstream graph's log ``up`` (opened read-only): the want goes
    into its command inbox, and the run follows its commits (LISTEN/NOTIFY on PostgreSQL, polling on SQLite, and
    a look every few seconds of the runtime's clock in any case) until the want ends."""

    def __init__(self, name: str, up: Log) -> None:
        self.name = name
        self.up = up

    async def want(self, ctx: JobContext, refs: list[str], *, source: str, comment: str) -> object:
        command_id = await self.up.submit_command("want", {"refs": refs, "source": source, "comment": comment})
        log.info("upstream want queued", graph=self.name, log=self.up.path, command=command_id, refs=len(refs))
        return (command_id, self.up.last_seq)  # the want is created after this seq (its command was just submitted)

    async def cancel(self, token: object, reason: str) -> None:
        command_id, _seq = cast(tuple[int, int], token)
        cmd = await self.up.command(command_id)
        if cmd is not None and cmd.result and cmd.result.get("ok"):
            await self.up.submit_command("cancel", {"want_id": str(cmd.result["want_id"]), "reason": reason})

    async def wait(self, ctx: JobContext, token: object, refs: list[str]) -> None:
        """Wait until the upstream want of the token's command is Successful; raise if it is refused or ends
        otherwise."""
        up = self.up
        command_id, seq = cast(tuple[int, int], token)
        want_id: str | None = None
        while True:
            if want_id is None:
                cmd = await up.command(command_id)
                if cmd is not None and cmd.done:
                    result = cmd.result or {}
                    if not result.get("ok"):
                        raise RuntimeError(want_refused(self.name, up.path, refs,
                                                        str(result.get("error", "no reason given"))))
                    want_id = str(result["want_id"])
            if want_id is not None:
                history = await up.history("want", want_id)
                world = World()
                for rec in history:
                    world.apply(rec)
                    seq = max(seq, rec.seq)
                st = world.wants[want_id]
                if st.terminal:
                    if st.status is WantStatus.SUCCESSFUL:
                        return
                    raise RuntimeError(want_ended(self.name, want_id, refs, st.status, st.reason, up.path))
            # Wait for the next commit that may concern it (the want's own events once it exists), or a while of
            # the runtime's clock (a simulated clock drives it in scenarios).
            found = await _next_commit(ctx, up.follow(seq + 1, kinds=["want"], entity_id=want_id))
            if found is not None:
                seq = found


async def _next_commit(ctx: JobContext, following: Any) -> int | None:
    """The seq of the next record ``following`` (an async generator) yields, or None after :data:`_WAKE` seconds
    of the run's clock."""
    got: list[int] = []
    try:
        async with anyio.create_task_group() as tg:

            async def wake() -> None:
                await ctx.sleep(_WAKE)
                tg.cancel_scope.cancel()

            tg.start_soon(wake)
            async with contextlib.aclosing(following):
                async for rec in following:
                    got.append(rec.seq)
                    break
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as eg:  # the task group wraps what the follower raised: raise it as it was
        one = sole_error(eg)
        if one is None:
            raise
        raise one from None
    return got[0] if got else None


def want_refused(graph: str, db: str, refs: list[str], error: str) -> str:
    """Why an upstream run failed: ``graph`` (log ``db``) refused its want."""
    return f"graph {graph!r} ({db}) refused the want for {_short(refs)}: {error}"


def want_ended(graph: str, want_id: str, refs: list[str], status: object, reason: str, db: str) -> str:
    """Why an upstream run failed: the want it made in ``graph`` (log ``db``) ended ``status``, not Successful."""
    return (f"graph {graph!r}: want {want_id} for {_short(refs)} ended {status}{f' ({reason})' if reason else ''}; "
            f"see `wantbuild explain {refs[0]} --db {db}`")


def _short(refs: list[str]) -> str:
    return ", ".join(refs[:3]) + (f" and {len(refs) - 3} more" if len(refs) > 3 else "")
