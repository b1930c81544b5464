"""`wantbuild ui`: a real subprocess serving a log on loopback; its URL, token, warnings, errors and stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from web_helpers import make_demo

from wantbuild._cli import cli
from wantbuild._web._server import is_loopback

UI = [sys.executable, "-m", "wantbuild", "ui"]


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo(tmp_path_factory.mktemp("demo") / "demo.db")


def start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """Start `wantbuild ui ARGS`; return it and the URL it printed (its first stdout line)."""
    proc = subprocess.Popen([*UI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"no URL on stdout: {url!r}; stderr: {err}")
    return proc, url


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


@pytest.fixture
def served(demo_log: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, url = start("--db", str(demo_log), "--port", "0")
    yield proc, url
    if proc.poll() is None:
        stop(proc)


def test_prints_its_url_serves_on_loopback_and_stops_cleanly_on_sigterm(
        served: tuple[subprocess.Popen[str], str]) -> None:
    """The URL on stdout is 127.0.0.1 with the port it took; it answers; SIGTERM ends it with exit 0."""
    proc, url = served
    assert url.startswith("http://127.0.0.1:")
    health = httpx.get(url + "api/health", timeout=10).json()
    assert health["writes"] is False
    r = httpx.post(url + "api/wants", json={"refs": ["daily/1"]}, timeout=10)
    assert r.status_code == 403
    code, err = stop(proc)
    assert code == 0
    assert "Serving the web view of" in err
    assert "Traceback" not in err


def test_sigint_stops_it_cleanly_too(demo_log: Path) -> None:
    """Ctrl-C (SIGINT) is a clean stop as well: exit 0, no traceback."""
    proc, url = start("--db", str(demo_log), "--port", "0")
    assert httpx.get(url, timeout=10).status_code in (200, 503)
    code, err = stop(proc, signal.SIGINT)
    assert code == 0
    assert "Traceback" not in err


def test_allow_writes_generates_a_token_and_prints_how_to_sign_in(demo_log: Path, tmp_path: Path) -> None:
    """Without WANTBUILD_UI_TOKEN a token is generated and printed on stderr with a sign-in link; it works."""
    db = tmp_path / "demo.db"
    db.write_bytes(demo_log.read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "WANTBUILD_UI_TOKEN"}
    proc = subprocess.Popen([*UI, "--db", str(db), "--port", "0", "--allow-writes"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**env, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert proc.stderr is not None
    lines = [proc.stderr.readline() for _ in range(2)]
    token_line = next(line for line in lines if line.startswith("Writes are on. Token: "))
    token = token_line.split("Token: ", 1)[1].split()[0]
    assert len(token) >= 24
    assert f"{url}login?token={token}" in token_line
    assert httpx.post(url + "api/wants", json={"refs": ["daily/1"]}, timeout=10).status_code == 401
    r = httpx.post(url + "api/wants", json={"refs": ["daily/1"]}, headers={"Authorization": f"Bearer {token}"},
                   timeout=30)
    assert r.status_code == 202  # no runtime serves this log: queued in the inbox
    assert stop(proc)[0] == 0


def test_a_token_from_the_environment_is_never_printed(demo_log: Path) -> None:
    """With WANTBUILD_UI_TOKEN set, stderr says writes are on but never shows the token."""
    proc, _ = start("--db", str(demo_log), "--port", "0", "--allow-writes",
                      env={"WANTBUILD_UI_TOKEN": "do-not-print-me"})
    code, err = stop(proc)
    assert code == 0
    assert "Writes are on, with the token in WANTBUILD_UI_TOKEN" in err
    assert "do-not-print-me" not in err


def test_a_missing_log_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """No log at --db: one error line naming it and how to make one; nothing listens."""
    r = CliRunner().invoke(cli, ["ui", "--db", str(tmp_path / "none.db"), "--port", "0"])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [
        f"Error: no log at {tmp_path / 'none.db'}: create one with `wantbuild demo` or `wantbuild run GRAPH.toml "
        f"--db {tmp_path / 'none.db'}`, or point --db at an existing log"]


def test_a_busy_port_is_one_line_naming_it(demo_log: Path) -> None:
    """A port already taken: one error line naming the address, suggesting another port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([*UI, "--db", str(demo_log), "--port", str(port)], capture_output=True, text=True,
                           timeout=30, check=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; pick another --port (0: any free one)")


def test_a_non_loopback_host_is_warned_about(demo_log: Path) -> None:
    """--host with a non-loopback address warns that others can reach it (here it cannot bind: TEST-NET-1)."""
    r = subprocess.run([*UI, "--db", str(demo_log), "--host", "192.0.2.1", "--port", "0", "--allow-writes"],
                       capture_output=True, text=True, timeout=30, check=False,
                       env={**os.environ, "WANTBUILD_UI_TOKEN": "x" * 30})
    assert r.returncode == 1
    err = " ".join(r.stderr.split())
    assert "Warning: listening on 192.0.2.1, which is not a loopback address: anyone who can reach this machine " \
           "can read the log (and change it with the token)" in err
    assert "Error: cannot listen on 192.0.2.1:0" in err


@pytest.mark.parametrize(("host", "loopback"), [
    pytest.param("127.0.0.1", True, id="v4"), pytest.param("127.8.9.10", True, id="v4-range"),
    pytest.param("::1", True, id="v6"), pytest.param("[::1]", True, id="v6-brackets"),
    pytest.param("localhost", True, id="name"), pytest.param("0.0.0.0", False, id="any"),
    pytest.param("192.168.1.4", False, id="lan"), pytest.param("example.org", False, id="other-name"),
])
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    """Only 127.0.0.0/8, ::1 and localhost are loopback."""
    assert is_loopback(host) is loopback


def test_without_the_web_extra_it_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, demo_log: Path) -> None:
    """If uvicorn (the web extra) is missing, `wantbuild ui` says to install wantbuild[web]."""
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    monkeypatch.delitem(sys.modules, "wantbuild._web._server", raising=False)
    r = CliRunner().invoke(cli, ["ui", "--db", str(demo_log)])
    assert r.exit_code == 1
    assert "the web view needs the web extra (uvicorn is not installed): pip install 'wantbuild[web]'" in r.output


def test_the_embedding_example_serves_a_runtime_and_reads_it_back(tmp_path: Path) -> None:
    """docs/examples/web_embed.py runs: the want succeeds and the API served from the runtime shows its lineage."""
    example = Path(__file__).resolve().parent.parent / "docs" / "examples" / "web_embed.py"
    r = subprocess.run([sys.executable, str(example), str(tmp_path)], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("web view on http://127.0.0.1:")
    assert lines[1:] == ["want w-00000001: Successful", "wants per status: {'Successful': 2}",
                         "lineage: [('raw/2026-11-02', 'daily/2026-11-02')]"]
