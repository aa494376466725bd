"""The soak's processes and peers: restartable children, their peak RSS and CPU, a serial sensor.

Split from ``bench/soak.py`` (the schedule, the faults and the end checks) so that each reads on
its own; ``bench/`` is the script's directory, so ``soak.py`` imports this module by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import random
import subprocess
import threading
import time
from pathlib import Path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------- processes


class Proc:
    """A child process that can be killed and started again with the same command."""

    def __init__(self, name: str, argv: list[str], logfile: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.logfile, self.env = name, argv, logfile, env
        self.p: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.logfile.open("ab") as out:
            self.p = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def signal(self, sig: int, wait: float = 30.0) -> None:
        if self.p is None or self.p.poll() is not None:
            return
        self.p.send_signal(sig)
        try:
            self.p.wait(wait)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(10)

    @property
    def pid(self) -> int | None:
        return self.p.pid if self.alive() and self.p is not None else None


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of the process in MB, (0, 0) when it is gone. The peak is VmHWM, the
    kernel's high-water mark, so a spike between two samples is not missed."""
    found = {"VmRSS:": 0.0, "VmHWM:": 0.0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(maxsplit=1)[0] if line else ""
            if key in found:
                found[key] = int(line.split()[1]) / 1024
    return found["VmRSS:"], found["VmHWM:"]


def memory_breakdown(pid: int) -> str:
    """Where the process's resident memory is, from /proc/PID/smaps: anonymous mappings (the
    three largest named by size), the malloc heap, and file mappings (libraries) — so a soak
    over its RSS budget says what to look at."""
    anon: list[float] = []
    heap = files = 0.0
    name = ""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            head = line.split(maxsplit=5)
            if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
                name = head[5] if len(head) == 6 else ""
            elif line.startswith("Rss:"):
                mb = int(line.split()[1]) / 1024
                if name == "[heap]":
                    heap += mb
                elif name.startswith("/"):
                    files += mb
                else:
                    anon.append(mb)
    largest = ", ".join(f"{mb:.0f}" for mb in sorted(anon, reverse=True)[:3])
    return f"anonymous {sum(anon):.0f} MB (largest {largest} MB), heap {heap:.0f} MB, files {files:.0f} MB"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- the serial sensor on a pty


class SerialFeeder:
    """Writes JSON lines to a pty at 2 Hz (the agent reads the other end); can inject garbage."""

    def __init__(self) -> None:
        self.master, slave = pty.openpty()
        self.path = os.ttyname(slave)
        self._slave = slave  # kept open so the pty survives agent restarts
        self._stop = threading.Event()
        self.noise_bursts = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.wait(0.5):
            line = json.dumps({"seq": seq, "pm25": 10 + seq % 7, "co2": 400 + seq % 50}) + "\n"
            with contextlib.suppress(OSError):
                os.write(self.master, line.encode())
            seq += 1

    def noise(self, rng: random.Random) -> None:
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(50, 400)))
        with contextlib.suppress(OSError):
            os.write(self.master, junk + b"\n{broken json\n")
        self.noise_bursts += 1

    def stop(self) -> None:
        self._stop.set()
