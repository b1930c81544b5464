"""Docs that run: generated diagrams are current, the examples execute, the README opens with its two commands.

``python tests/test_docs.py`` rewrites the diagrams in docs/concepts.md from the transition tables.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wantbuild._cli import DIAGRAMS, cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONCEPTS = DOCS / "concepts.md"
BLOCK = re.compile(r"(<!-- diagram: (\w+)[^>]*-->\n)(.*?)(<!-- /diagram -->)", re.S)
PYTHON = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown text, each with the number of lines before it."""
    return [(text.count("\n", 0, m.start(1)), m.group(1)) for m in PYTHON.finditer(text)]


def run_blocks(path: Path) -> None:
    """Run a page's python blocks in order, as one program, with top-level await (as in ``python -m asyncio``)."""
    namespace: dict[str, Any] = {"__name__": f"docs_{path.stem}"}
    blocks = python_blocks(path.read_text())

    async def main() -> None:
        for before, source in blocks:
            code = compile("\n" * before + source, str(path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            result = eval(code, namespace)
            if inspect.iscoroutine(result):
                await result

    asyncio.run(main())


def fenced(kind: str) -> str:
    return f"```mermaid\n{DIAGRAMS[kind].mermaid()}```\n"


def render_concepts(text: str) -> str:
    """docs/concepts.md with every diagram block regenerated."""
    return BLOCK.sub(lambda m: m.group(1) + fenced(m.group(2)) + m.group(4), text)


def test_concepts_embeds_every_diagram_and_they_are_current() -> None:
    """concepts.md has a want, partition and jobrun diagram, each equal to the generated one."""
    text = CONCEPTS.read_text()
    found = {m.group(2): m.group(3) for m in BLOCK.finditer(text)}
    assert sorted(found) == sorted(DIAGRAMS)
    stale = [kind for kind, body in found.items() if body != fenced(kind)]
    assert stale == [], f"docs/concepts.md is stale for {stale}: run `python tests/test_docs.py` to regenerate"


def test_readme_opens_with_the_two_setup_commands() -> None:
    """The README's first code block is exactly the install-and-demo and install-and-test commands."""
    text = (ROOT / "README.md").read_text()
    first = re.search(r"```sh\n(.*?)```", text, re.S)
    assert first is not None
    assert first.group(1).splitlines() == [
        "pip install -e . && wantbuild demo",
        "pip install -e '.[dev]' && python -m pytest -q",
    ]
    assert text.index("```sh") < text.index("## ")


def test_cli_reference_covers_every_command() -> None:
    """docs/cli.md has a section for each top-level command, and names each want subcommand."""
    text = (DOCS / "cli.md").read_text()
    mine = sorted(name for name in cli.commands if name != "scenario")
    assert [name for name in mine if f"\n## {name}\n" not in text] == []
    want = cli.commands["want"]
    assert hasattr(want, "commands")
    assert [name for name in want.commands if f"wantbuild want {name}" not in text] == []


def test_embedding_example_runs(tmp_path: Path) -> None:
    """docs/examples/embed.py runs to the end: the want succeeds, a derived want was made, no violation."""
    proc = subprocess.run([sys.executable, str(DOCS / "examples" / "embed.py"), str(tmp_path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^want w-\d+: Successful$", out, re.M), out
    assert "JobRunDepMiss" in out
    assert "derived wants: [('w-" in out
    assert "0 invariant violations" in out
    assert (tmp_path / "example.db").exists()


def test_embedding_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """Every python block of docs/embedding.md runs, in order, as one program, and its assertions hold."""
    assert len(python_blocks((DOCS / "embedding.md").read_text())) >= 7
    monkeypatch.chdir(tmp_path)
    run_blocks(DOCS / "embedding.md")
    out = capsys.readouterr().out
    assert "Successful" in out
    assert "no job of graph 'example' produces 'dayly/2026-11-02'" in out
    assert (tmp_path / "example.db").exists()


def test_readme_embed_snippet_is_a_program_that_runs(tmp_path: Path) -> None:
    """The README's embedding example is a whole program (an async def and asyncio.run) and it runs."""
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 1
    script = tmp_path / "readme_example.py"
    script.write_text(blocks[0][1])
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Successful" in proc.stdout.splitlines()
    assert "daily/2026-11-02 [Live]" in proc.stdout


def test_tour_graph_builds_with_command_jobs(tmp_path: Path) -> None:
    """The README's graph file builds weekly/2026-11-02 through command jobs that report missing deps."""
    graph = DOCS / "examples" / "graph.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "wantbuild", "run", str(graph), "--want", "weekly/2026-11-02", "--db",
         str(tmp_path / "tour.db"), "--json"],
        cwd=tmp_path, env={**os.environ, "WANTBUILD_WORK_SECONDS": "0"}, capture_output=True, text=True,
        timeout=90, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"]
    assert out["partitions"] == {"Live": 15}
    assert out["runs"]["DepMiss"] >= 2
    assert len(out["derived_wants"]) >= 2
    assert len(list((tmp_path / "tour-data").glob("*.txt"))) == 15


@pytest.mark.parametrize("doc", ["concepts.md", "cli.md", "embedding.md", "web.md", "lineage.md",
                                 "job-protocol.md"])
def test_relative_links_resolve(doc: str) -> None:
    """Every relative link in the docs points at a file that exists."""
    text = (DOCS / doc).read_text()
    links = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if "://" not in t]
    assert [t for t in links if not (DOCS / t).exists()] == []


if __name__ == "__main__":
    CONCEPTS.write_text(render_concepts(CONCEPTS.read_text()))
    print(f"rewrote the diagrams in {CONCEPTS}")
