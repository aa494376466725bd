"""A throwaway PostgreSQL cluster: ``initdb`` + ``pg_ctl`` on a free port in a temporary directory.

Used by the test fixtures and the soak harness. ``initdb`` refuses to run as root, so as root the
server binaries run through ``runuser -u postgres``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


def pg_bin() -> Path | None:
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / "initdb").exists() and (root / "pg_ctl").exists():
            return root
    return None


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """``with PgCluster() as url:`` — a server that lives as long as the block."""

    def __init__(self, database: str = "fieldcap", *, trust_nets: tuple[str, ...] = ()) -> None:
        """``trust_nets`` (CIDR): also listen on every address and let these networks in (other hosts)."""
        bin_dir = pg_bin()
        if bin_dir is None:
            raise RuntimeError(
                "PostgreSQL server binaries are missing: run `./dev test` (installs Debian's postgresql)"
            )
        self.bin = bin_dir
        self.database = database
        self.tmp = Path(tempfile.mkdtemp(prefix="fieldcap-pg-"))
        self.data = self.tmp / "data"
        self.port = _free_port()
        self.trust_nets = trust_nets

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> str:
        self.tmp.chmod(0o777)
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres")
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"]
        subprocess.run(_as_postgres(initdb), check=True, capture_output=True)
        listen = "127.0.0.1"
        if self.trust_nets:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.writelines(f"host all all {net} trust\n" for net in self.trust_nets)
            listen = "*"
        opts = f"-p {self.port} -k {self.tmp} -c listen_addresses='{listen}' -c fsync=off"
        start = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.tmp / "log"), "-w", "start"]
        subprocess.run(_as_postgres(start), check=True, capture_output=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        createdb = [
            str(self.bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            self.database,
        ]
        subprocess.run(_as_postgres(createdb), check=True, capture_output=True)
        return self.url

    def stop(self) -> None:
        stop = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
        subprocess.run(_as_postgres(stop), capture_output=True, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> str:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
