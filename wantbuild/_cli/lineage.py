"""``wantbuild lineage REF``: what a partition was built from (or, ``--down``, what was built from it)."""

from __future__ import annotations

import click
from rich.text import Text

from actors import InvalidRef, LineageGraph, LineageNode, lineage, validate_refs

from .._access import Db, load_world, parse_until
from .._output import console, fmt_time, status_text
from .app import db_option, emit_json, json_option, run_async


@click.command("lineage", short_help="What a partition was built from, or (--down) what was built from it.")
@click.argument("ref")
@click.option("--down", is_flag=True, help="What was built from REF (downstream), instead of what REF was built "
              "from.")
@click.option("--depth", type=click.IntRange(min=0), help="At most this many levels (default: all).")
@click.option("--generation", type=click.IntRange(min=1),
              help="A past generation of REF (default: its current one).")
@click.option("--until", metavar="SEQ|TIME",
              help="The lineage as the log knew it then: a seq (an integer) or a time (seconds, or ISO).")
@click.option("--mermaid", is_flag=True, help="Print a Mermaid flowchart instead of a tree.")
@click.option("--limit", type=click.IntRange(min=1), default=500, show_default=True,
              help="Print at most this many nodes of the tree (--json and --mermaid print them all).")
@db_option
@json_option
def lineage_command(ref: str, down: bool, depth: int | None, generation: int | None, until: str | None,
                    mermaid: bool, limit: int, db: Db, as_json: bool) -> None:
    """The lineage of partition REF, by generation: the partitions (at the generations read) that REF was built
    from, and theirs, as a tree; with --down, everything built from REF, transitively.

    Each line is one generation of one partition: `raw/2026-11-02 @2 Live, built by r-00000005 (ingest)`.
    A generation that is no longer current is `Superseded`; `stale` marks a Live partition one of whose inputs
    has been rebuilt since.
    """
    try:
        ref = validate_refs([ref])[0]
    except InvalidRef as e:
        raise click.BadParameter(str(e), param_hint="REF") from None
    until_seq, until_time = parse_until(until) if until is not None else (None, None)

    async def main() -> LineageGraph:
        world = await load_world(db, until_seq=until_seq, until_time=until_time)
        return lineage(world, ref, direction="down" if down else "up", depth=depth, generation=generation)

    graph = run_async(main)
    if as_json:
        emit_json(graph.to_dict())
    elif mermaid:
        click.echo(graph.mermaid(), nl=False)
    else:
        console().print(tree_text(graph, limit), end="")


def node_line(node: LineageNode) -> Text:
    """``raw/1 @2 Live, built by r-00000005 (raw)``, statuses coloured."""
    line = Text(f"{node.ref} ", style="bold" if node.level == 0 else "")
    line.append(f"@{node.generation} ")
    line.append_text(status_text(node.status))
    if node.status == "Superseded":
        line.append(f" (now @{node.current_generation})", style="dim")
    if node.stale:
        line.append(" stale", style="yellow")
    if node.tainted_by:
        line.append(f" by {node.tainted_by}", style="yellow")
    if node.run is not None:
        line.append(f", built by {node.run} ({node.job}) {fmt_time(node.built_at)}", style="dim")
    else:
        line.append(", built by no run of this log", style="dim")
    return line


def tree_text(graph: LineageGraph, limit: int) -> Text:
    """The graph as an indented tree from its root; a node reached again is named, not expanded again."""
    out = Text()
    printed = 0
    shown: set[str] = set()
    stack: list[tuple[str, str]] = [(graph.root.key, "")]
    children: dict[str, list[str]] = {}
    for a, b in graph.edges:
        parent, child = (a, b) if graph.direction == "down" else (b, a)
        children.setdefault(parent, []).append(child)
    while stack:
        key, pad = stack.pop()
        if printed >= limit:
            out.append(f"... {len(graph.nodes) - len(shown)} more node(s): raise --limit, or use --json\n",
                       style="dim")
            break
        out.append(pad)
        out.append_text(node_line(graph.nodes[key]))
        printed += 1
        kids = children.get(key, [])
        if key in shown and kids:
            out.append("  (shown above)\n", style="dim")
            continue
        out.append("\n")
        shown.add(key)
        for kid in reversed(kids):
            stack.append((kid, pad + "  "))
    if graph.truncated:
        out.append(f"(stopped at depth {graph.depth}: there is more; raise --depth)\n" if graph.depth is not None
                   else "(stopped at the node limit)\n", style="dim")
    arrow = "upstream (what it was built from)" if graph.direction == "up" else "downstream (built from it)"
    total = len(graph.nodes) - 1
    out.append(f"{total} partition generation(s) {arrow}" if total else
               ("built from nothing this log knows of (no recorded reads)" if graph.direction == "up"
                else "nothing was built from it"), style="italic")
    out.append("\n")
    return out
