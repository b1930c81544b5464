"""A throwaway PostgreSQL server for tests and benchmarks: Debian's binaries, a temp dir, 127.0.0.1 and a socket.

PostgreSQL refuses to run as root, so under root (CI) the server runs as ``nobody`` (uid/gid 65534) through
``setpriv``; otherwise as the current user. It listens on 127.0.0.1 (a free port, password auth: tests see the
password redacted in every message) and on a Unix socket in its own folder (trust auth, for the superuser's
own set-up). ``stop()`` ends it and removes the folder.

Use from a shell::

    python tests/pg_server.py        # starts one, prints its URL, stops it on Enter
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

PASSWORD = "s3cret-pw"
"""The superuser's password on 127.0.0.1 (tests check that no message shows it)."""

NOBODY = 65534


def find_bindir() -> Path | None:
    """The folder of Debian's PostgreSQL server binaries (newest version), or None when none is installed."""
    override = os.environ.get("WANTBUILD_PG_BINDIR")
    candidates = [override] if override else sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                                    key=lambda p: int(Path(p).parent.name), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temp dir; :meth:`start` (initdb once) and :meth:`stop` it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="wantbuild-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.logfile = self.root / "server.log"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        self._initialised = False

    # ------------------------------------------------------------------ urls

    @property
    def url(self) -> str:
        """The superuser over TCP with a password (what tests give the log)."""
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    @property
    def socket_url(self) -> str:
        """The superuser over the Unix socket (trust), for set-up without a password."""
        return f"postgresql://postgres@/postgres?host={self.sock}&port={self.port}"

    # ------------------------------------------------------------------ running

    def _run(self, args: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.as_root:
            cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]

    def _init(self) -> None:
        self.sock.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            for p in (self.root, self.sock, pwfile):
                os.chown(p, NOBODY, NOBODY)
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--pwfile", str(pwfile),
                   "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions"])
        pwfile.unlink()
        self._initialised = True

    def start(self) -> None:
        """Start the server (initialising the cluster the first time) and wait until it accepts connections."""
        if not self._initialised:
            self._init()
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} -c max_connections=200 "
                "-c shared_buffers=64MB")
        try:
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-o", opts,
                       "-w", "-t", "60", "start"])
        except subprocess.CalledProcessError as e:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {e.stderr}\n{log[-2000:]}") from e

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: fast, immediate, smart); a server already stopped is fine."""
        subprocess.run(
            (["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if self.as_root else [])
            + [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
            capture_output=True, check=False,
        )

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PgServer | None:
    """A started server, or None when PostgreSQL's binaries are not installed."""
    bindir = find_bindir()
    if bindir is None:
        return None
    server = PgServer(bindir)
    try:
        server.start()
    except BaseException:
        server.remove()
        raise
    return server


HOW = ("install PostgreSQL (Debian: apt-get install postgresql) or point WANTBUILD_TEST_PG_URL at a server "
       "where the user may create schemas")


if __name__ == "__main__":
    t0 = time.perf_counter()
    srv = start_server()
    if srv is None:
        raise SystemExit(f"no PostgreSQL binaries found: {HOW}")
    print(f"{srv.url}  (started in {time.perf_counter() - t0:.1f}s; Enter stops it)")
    try:
        input()
    finally:
        srv.remove()
