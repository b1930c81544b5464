"""Graphs the pages draw: a partition's lineage and a want's tree of derived wants, as data and as Mermaid.

The layout is Mermaid's (its flowchart renderer, vendored), never ours: this module only decides which nodes
and edges to show, bounded by depth and node count so a page never draws thousands of boxes.

**Lineage edges.** Two sources, merged:

- *discovered* (available now): a job run that ended ``DepMiss`` reported upstream refs missing for each of
  its partitions; each such pair is an edge ``upstream -> partition`` labelled with the run.
- *recorded* (issue #11): what the run that built the partition's last generation read (``JobRunSucceeded.read``),
  and what was built from that generation, from the World's lineage index (:func:`actors.lineage` answers the
  same by generation, for ``wantbuild lineage`` and ``/api/lineage``).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from actors import outputs_of

from ._observer import Observer

Direction = Literal["up", "down", "both"]

MAX_NODES = 60
MAX_DEPTH = 4


@dataclass(frozen=True)
class Edge:
    """``upstream`` feeds ``downstream``; ``via`` is the run that showed it; ``kind`` how we know."""

    upstream: str
    downstream: str
    via: str
    kind: Literal["missing-dependency", "read"]


def discovered_edges(obs: Observer, ref: str, direction: Literal["up", "down"]) -> Iterable[Edge]:
    """Edges from missing-dependency reports: what ``ref``'s runs said it needs, or who said they need it."""
    if direction == "up":
        for up, run in obs.needs.get(ref, {}).items():
            yield Edge(up, ref, run, "missing-dependency")
    else:
        for down, run in obs.needed_by.get(ref, {}).items():
            yield Edge(ref, down, run, "missing-dependency")


def recorded_edges(obs: Observer, ref: str, direction: Literal["up", "down"]) -> Iterable[Edge]:
    """Edges from what runs recorded reading: the inputs of ``ref``'s last built generation (``up``), or what was
    built from that generation (``down``), each labelled with the run."""
    world = obs.world
    index = world.lineage
    builder, gen = None, None
    for rid in reversed(index.builder_runs(ref)):  # the last run that built it (a hash match may name another)
        builder = world.runs.get(rid)
        gen = index.generation_in(builder, ref) if builder is not None else None
        if gen is not None:
            break
    if builder is None or gen is None:
        return
    if direction == "up":
        for up in index.inputs_in(builder, ref):
            yield Edge(up, ref, builder.job_run_id, "read")
    else:
        for down, _gen, run in outputs_of(world, ref, gen):
            yield Edge(ref, down, run.job_run_id, "read")


def lineage(obs: Observer, ref: str, direction: Direction = "both", depth: int = MAX_DEPTH,
            max_nodes: int = MAX_NODES) -> dict[str, Any]:
    """The lineage around ``ref``: nodes (with status) and edges, breadth-first, at most ``max_nodes``."""
    world = obs.world
    nodes: dict[str, int] = {ref: 0}
    edges: dict[tuple[str, str], Edge] = {}
    truncated = False
    dirs: tuple[Literal["up", "down"], ...] = ("up", "down") if direction == "both" else (direction,)
    for d in dirs:
        queue: deque[tuple[str, int]] = deque([(ref, 0)])
        seen = {ref}
        while queue:
            cur, level = queue.popleft()
            if level >= depth:
                if _has_edges(obs, cur, d):
                    truncated = True
                continue
            for e in (*discovered_edges(obs, cur, d), *recorded_edges(obs, cur, d)):
                nxt = e.upstream if d == "up" else e.downstream
                if nxt not in nodes:
                    if len(nodes) >= max_nodes:
                        truncated = True
                        continue
                    nodes[nxt] = -(level + 1) if d == "up" else level + 1
                edges.setdefault((e.upstream, e.downstream), e)
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append((nxt, level + 1))
    out_nodes = [{"ref": r, "status": str(world.partition(r).status), "level": lvl, "root": r == ref}
                 for r, lvl in nodes.items()]
    out_edges = [{"upstream": e.upstream, "downstream": e.downstream, "via": e.via, "kind": e.kind}
                 for e in edges.values()]
    return {"ref": ref, "nodes": out_nodes, "edges": out_edges, "truncated": truncated,
            "mermaid": lineage_mermaid(out_nodes, out_edges) if out_edges else ""}


def _has_edges(obs: Observer, ref: str, d: Literal["up", "down"]) -> bool:
    return any(True for _ in discovered_edges(obs, ref, d)) or any(True for _ in recorded_edges(obs, ref, d))


def derived_tree(obs: Observer, want_id: str, depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> dict[str, Any]:
    """The wants derived from ``want_id`` (their children, recursively), bounded; with a Mermaid flowchart."""
    wants = obs.world.wants
    count = 1
    truncated = False

    def node(wid: str, level: int) -> dict[str, Any]:
        nonlocal count, truncated
        st = wants[wid]
        kids: list[dict[str, Any]] = []
        children = obs.children.get(wid, [])
        if children and level >= depth:
            truncated = True
        elif children:
            for kid in children:
                if count >= max_nodes:
                    truncated = True
                    break
                count += 1
                kids.append(node(kid, level + 1))
        return {"want_id": wid, "status": str(st.status), "refs": len(st.refs), "first_ref": st.refs[0],
                "source": st.source, "children": kids, "more": len(children) - len(kids)}

    tree = node(want_id, 0)
    return {"tree": tree, "size": count, "truncated": truncated, "order": tree_links(tree),
            "mermaid": tree_mermaid(tree) if tree["children"] else ""}


# -- Mermaid ---------------------------------------------------------------------------------------------

_SAFE = re.compile(r"[A-Za-z0-9/_.:=+,@ -]")
STATUS_CLASS = {
    "Live": "ok", "Successful": "ok", "Succeeded": "ok",
    "Failed": "bad", "UpstreamFailed": "bad",
    "Building": "busy", "Running": "busy", "Queued": "busy", "UpstreamWaiting": "wait", "UpstreamBuilding": "wait",
    "Idle": "wait", "New": "wait",
    "Tainted": "warn", "DepMiss": "warn", "Canceled": "stop", "Expired": "stop", "Lost": "stop",
    "Missing": "none",
}
_CLASSDEFS = (
    "    classDef ok fill:#d7f5dd,stroke:#2f8a46,color:#123;\n"
    "    classDef bad fill:#fbd9d9,stroke:#b3261e,color:#300;\n"
    "    classDef busy fill:#d8ecfb,stroke:#1f6fb2,color:#012;\n"
    "    classDef wait fill:#e4e4fb,stroke:#5050b0,color:#112;\n"
    "    classDef warn fill:#fbf0cf,stroke:#a67c00,color:#210;\n"
    "    classDef stop fill:#f3e0f3,stroke:#8a3d8a,color:#201;\n"
    "    classDef none fill:#eeeeee,stroke:#888888,color:#222;\n"
    "    classDef root stroke-width:3px;\n"
)


def mermaid_text(text: str) -> str:
    """``text`` safe inside a quoted Mermaid label: anything unusual becomes a ``#code;`` entity."""
    return "".join(c if _SAFE.match(c) else f"#{ord(c)};" for c in text)


def lineage_mermaid(nodes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> str:
    """A left-to-right flowchart: upstream on the left; node ``nI`` is ``nodes[I]`` (the page links them)."""
    ids = {n["ref"]: f"n{i}" for i, n in enumerate(nodes)}
    lines = ["flowchart LR"]
    for n in nodes:
        lines.append(f'    {ids[n["ref"]]}["{mermaid_text(n["ref"])}<br/>{n["status"]}"]')
    for e in edges:
        lines.append(f"    {ids[e['upstream']]} --> {ids[e['downstream']]}")
    for n in nodes:
        cls = STATUS_CLASS.get(n["status"], "none")
        lines.append(f"    class {ids[n['ref']]} {cls}")
        if n["root"]:
            lines.append(f"    class {ids[n['ref']]} root")
    return "\n".join(lines) + "\n" + _CLASSDEFS


def tree_mermaid(tree: dict[str, Any]) -> str:
    """A top-down flowchart of a derived-want tree; node ``nI`` is the I-th want in depth-first order."""
    lines = ["flowchart TD"]
    classes: list[str] = []
    counter = 0

    def walk(n: dict[str, Any]) -> str:
        nonlocal counter
        me = f"n{counter}"
        counter += 1
        label = f"{n['want_id']}<br/>{n['status']}<br/>{mermaid_text(n['first_ref'])}"
        if n["refs"] > 1:
            label += f" +{n['refs'] - 1}"
        lines.append(f'    {me}["{label}"]')
        classes.append(f"    class {me} {STATUS_CLASS.get(n['status'], 'none')}")
        for kid in n["children"]:
            lines.append(f"    {me} --> {walk(kid)}")
        if n["more"]:
            more = f"{me}m"
            lines.append(f'    {more}["… {n["more"]} more"]')
            lines.append(f"    {me} --> {more}")
        return me

    walk(tree)
    return "\n".join([*lines, *classes]) + "\n" + _CLASSDEFS


def tree_links(tree: dict[str, Any]) -> list[str]:
    """The want ids of a tree in the depth-first order :func:`tree_mermaid` numbers its nodes."""
    out: list[str] = []

    def walk(n: dict[str, Any]) -> None:
        out.append(n["want_id"])
        for kid in n["children"]:
            walk(kid)

    walk(tree)
    return out
