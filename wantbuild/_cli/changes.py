"""Changing a log from a command: through the running runtime's inbox, a runtime of our own, or queued."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from supervisor import Runtime, load_graph

from .._access import CliError, Db, Submitted, runtime_active, submit
from .._output import command_note, console
from .._signals import Interrupts
from .app import emit_json
from .run import build


async def change(db: Db, graph_path: Path | None, name: str, payload: dict[str, Any], *, timeout: float,
                 as_json: bool, describe: Callable[[dict[str, Any]], str],
                 apply: Callable[[Runtime], Awaitable[dict[str, Any]]] | None = None,
                 quiet: bool = False) -> tuple[int, dict[str, Any]]:
    """Apply a change to the log: via the running runtime's inbox, via a runtime of our own (``--graph``, then
    run until every want is terminal), or queued in the inbox for the next runtime. Returns (exit code, result)."""
    out, err = console(), console(stderr=True)
    if await runtime_active(db):
        sent = await submit(db, name, payload, timeout)
        tell_rejected(sent)
        command_id, answer = sent.command_id, sent.result
        if answer is None:
            raise CliError(f"submitted as command {command_id}, but the runtime on {db} did not answer within "
                           f"{timeout:g} s; it applies the command when it gets to it (check `wantbuild status`)")
        if not answer.get("ok"):
            raise CliError(str(answer.get("error", "the runtime refused the command")))
        result = {**answer, "via": "inbox", "command_id": command_id}
        if as_json and not quiet:
            emit_json(result)
        elif not quiet:
            out.print(describe(result))
        return 0, result
    if graph_path is not None and apply is not None:
        graph = load_graph(graph_path)
        results: list[dict[str, Any]] = []

        async def then(rt: Runtime) -> None:
            results.append({**(await apply(rt)), "via": "runtime"})
            if not as_json:
                out.print(describe(results[0]))

        with Interrupts() as interrupts:
            code = await build(db, graph, interrupts=interrupts, as_json=as_json, then=then)
        return code, results[0] if results else {"ok": False}
    sent = await submit(db, name, payload, 0)
    tell_rejected(sent)
    command_id = sent.command_id
    result = {"ok": True, "via": "queued", "command_id": command_id}
    if as_json:
        emit_json(result)
    else:
        err.print(f"No runtime is running on {db}: queued as command {command_id}; it is applied when a runtime "
                  f"next opens the log (`wantbuild run GRAPH.toml --db {db}`), and `wantbuild want show "
                  f"{command_id} --db {db}` says how it went. Pass --graph GRAPH.toml to apply it now.")
    return 0, result


def tell_rejected(sent: Submitted) -> None:
    """Tell whoever submits a command about earlier commands a runtime rejected since the last submission."""
    err = console(stderr=True)
    for cmd in sent.rejected:
        err.print(f"Note: {command_note(cmd)}")
