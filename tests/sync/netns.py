"""Separate hosts on one machine: network namespaces joined to this one by veth pairs.

Host ``k`` sees this machine (where the test runs the broker, PostgreSQL and the object store) at
``10.231.k.1`` and is itself ``10.231.k.2``. Needs root and iproute2; ``available()`` says why not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

NET = "10.231.0.0/16"


@dataclass(frozen=True)
class Host:
    name: str  # the namespace
    address: str  # the host's own address
    gateway: str  # this machine, as the host reaches it

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run on this host."""
        return ["ip", "netns", "exec", self.name, *argv]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def available() -> str | None:
    """None when namespaces can be made here, else the reason."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"fcprobe{uuid.uuid4().hex[:6]}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


@contextmanager
def hosts(count: int) -> Iterator[list[Host]]:
    """``count`` hosts, removed (with their links) afterwards."""
    tag = uuid.uuid4().hex[:5]
    made: list[Host] = []
    try:
        for k in range(1, count + 1):
            ns, outer, inner = f"fc{tag}h{k}", f"fc{tag}o{k}", f"fc{tag}i{k}"
            host = Host(ns, f"10.231.{k}.2", f"10.231.{k}.1")
            _ip("netns", "add", ns)
            made.append(host)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("addr", "add", f"{host.gateway}/24", "dev", outer)
            _ip("link", "set", outer, "up")
            _ip("-n", ns, "addr", "add", f"{host.address}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield made
    finally:
        for host in made:
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True, check=False)
