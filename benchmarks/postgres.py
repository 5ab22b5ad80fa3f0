"""A throwaway Postgres on 127.0.0.1 (trust auth, fsync off), for the tests and benchmarks
that need a real database server: Debian's server binaries (`.ci/provision` installs them)."""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def server_binaries() -> Path | None:
    """The newest installed Postgres's `bin` folder, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@contextmanager
def throwaway_postgres(bin_dir: Path) -> Iterator[tuple[Callable[[], str], int]]:
    """A running server: a function that creates a fresh database and returns its SQLAlchemy
    URL (psycopg2 driver), and the server's pid. Stopped and removed afterwards."""
    # Not inside a 0700 temporary folder of root's: the postgres user must enter it.
    root = Path(tempfile.mkdtemp(prefix="align-track-pg-"))
    shutil.chown(root, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def as_postgres(*cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True,
                       capture_output=True, timeout=120)

    as_postgres(str(bin_dir / "initdb"), "-D", f"{root}/data", "-U", "postgres", "-A", "trust",
                "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
    as_postgres(str(bin_dir / "pg_ctl"), "-D", f"{root}/data", "-l", f"{root}/pg.log", "-o",
                f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off", "-w", "start")
    names = (f"db{n}" for n in itertools.count())

    def database() -> str:
        name = next(names)
        as_postgres(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                    "postgres", name)
        return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{name}"

    try:
        yield database, int((root / "data" / "postmaster.pid").read_text().split()[0])
    finally:
        as_postgres(str(bin_dir / "pg_ctl"), "-D", f"{root}/data", "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
