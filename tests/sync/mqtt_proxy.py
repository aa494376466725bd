"""An in-process TCP proxy on 127.0.0.1 between a device and the broker, for network faults.

Byte-level faults: added latency, a bandwidth cap, a blackhole (the connection stays open but
nothing gets through either way: a half-open link), connection resets (RST), and refusing new
connections (an outage). MQTT-aware faults on the device → broker direction: each PUBLISH can be
forwarded, dropped (the proxy answers the PUBACK itself, like a broker that accepts and loses),
corrupted, duplicated or held back until later publishes have passed (reordering); and everything
the device published can be recorded for replaying later.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HOLD_MAX_S = 0.5
Action = str | tuple[str, int]  # "forward" | "drop" | "corrupt" | "duplicate" | ("hold", n_later)
Filter = Callable[[str, bytes], Action]


@dataclass
class Publish:
    topic: str
    payload: bytes
    packet_id: int | None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _split_packet(buf: bytearray) -> bytes | None:
    """Take one complete MQTT packet off the front of ``buf``, or None if it is incomplete."""
    if len(buf) < 2:
        return None
    length, mult, i = 0, 1, 1
    while True:
        if i >= len(buf):
            return None
        byte = buf[i]
        length += (byte & 0x7F) * mult
        mult *= 128
        i += 1
        if not byte & 0x80:
            break
    if len(buf) < i + length:
        return None
    packet = bytes(buf[: i + length])
    del buf[: i + length]
    return packet


def _parse_publish(packet: bytes) -> tuple[int, str, int | None, int, int]:
    """(header, topic, packet id, offset of the payload, offset of the variable header)."""
    header = packet[0]
    i = 1
    while packet[i] & 0x80:
        i += 1
    start = i + 1
    (tlen,) = struct.unpack_from("!H", packet, start)
    topic = packet[start + 2 : start + 2 + tlen].decode()
    pos = start + 2 + tlen
    pid = None
    if (header >> 1) & 0x03:
        (pid,) = struct.unpack_from("!H", packet, pos)
        pos += 2
    plen, mult = 0, 1  # MQTT 5 properties length
    while True:
        byte = packet[pos]
        pos += 1
        plen += (byte & 0x7F) * mult
        mult *= 128
        if not byte & 0x80:
            break
    return header, topic, pid, pos + plen, start


def _with_payload(packet: bytes, payload: bytes) -> bytes:
    header, _topic, _pid, at, start = _parse_publish(packet)
    body = packet[start:at] + payload
    return bytes([header]) + _varint(len(body)) + body


@dataclass
class _Link:
    client: socket.socket
    server: socket.socket
    to_server: queue.Queue[tuple[float, bytes] | None] = field(default_factory=queue.Queue)
    to_client: queue.Queue[tuple[float, bytes] | None] = field(default_factory=queue.Queue)
    held: list[tuple[int, bytes]] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)


class Proxy:
    """``with Proxy(broker_port) as p: ... p.url``; change the fault attributes at any time."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self.latency_s = 0.0
        self.bandwidth_bps: int | None = None
        self.blackhole = False
        self.refuse = False
        self.on_publish: Filter | None = None
        self.recorded: list[Publish] = []
        self.record = False
        self.connections = 0
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def __enter__(self) -> Proxy:
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.reset()
        for t in self._threads:
            t.join(5)
        self._listener.close()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    # ------------------------------------------------------------------ faults

    def reset(self) -> None:
        """Cut every open connection with a TCP reset."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            self._close(link, rst=True)

    def live(self) -> int:
        with self._lock:
            return len(self._links)

    # ------------------------------------------------------------------ plumbing

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.refuse:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.settimeout(0.2)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
                self.connections += 1
            self._spawn(self._read_client, link)
            self._spawn(self._read_server, link)
            self._spawn(self._writer, link, link.to_server, link.server)
            self._spawn(self._writer, link, link.to_client, link.client)

    def _close(self, link: _Link, *, rst: bool = False) -> None:
        if link.closed.is_set():
            return
        link.closed.set()
        for s in (link.client, link.server):
            with contextlib.suppress(OSError):
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
        link.to_server.put(None)
        link.to_client.put(None)
        with self._lock:
            if link in self._links:
                self._links.remove(link)

    def _recv(self, link: _Link, sock: socket.socket) -> bytes | None:
        while not link.closed.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            return data
        self._close(link)
        return None

    def _read_server(self, link: _Link) -> None:
        while (data := self._recv(link, link.server)) is not None:
            if not self.blackhole:
                link.to_client.put((time.monotonic() + self.latency_s, data))

    def _read_client(self, link: _Link) -> None:
        buf = bytearray()
        while (data := self._recv(link, link.client)) is not None:
            if self.blackhole:
                buf.clear()
                continue
            buf += data
            while (packet := _split_packet(buf)) is not None:
                self._client_packet(link, packet)

    def _client_packet(self, link: _Link, packet: bytes) -> None:
        due = time.monotonic() + self.latency_s
        if packet[0] >> 4 != 3:  # not a PUBLISH
            link.to_server.put((due, packet))
            return
        _h, topic, pid, at, _s = _parse_publish(packet)
        payload = packet[at:]
        if self.record:
            self.recorded.append(Publish(topic, payload, pid))
        action = self.on_publish(topic, payload) if self.on_publish else "forward"
        out: list[bytes] = []
        if action == "drop":
            if pid is not None:  # accept and lose it, as a broker without subscribers would
                link.to_client.put((due, bytes([0x40, 0x02]) + struct.pack("!H", pid)))
        elif action == "corrupt":
            bad = bytearray(payload)
            if bad:
                bad[len(bad) // 2] ^= 0xFF
            out.append(_with_payload(packet, bytes(bad)))
        elif action == "duplicate":
            out += [packet, packet]
        elif isinstance(action, tuple) and action[0] == "hold":
            link.held.append((action[1], packet))
            threading.Timer(HOLD_MAX_S, self._release, (link, packet)).start()
        else:
            out.append(packet)
        if out and link.held:  # held packets go out once enough later publishes have passed
            with self._lock:
                still = []
                for n, held in link.held:
                    if n <= 1:
                        out.append(held)
                    else:
                        still.append((n - 1, held))
                link.held = still
        for p in out:
            link.to_server.put((due, p))

    def _release(self, link: _Link, packet: bytes) -> None:
        """A held packet goes out after HOLD_MAX_S even if no later publish came."""
        with self._lock:
            held = [h for h in link.held if h[1] is packet]
            if not held:
                return
            link.held.remove(held[0])
        link.to_server.put((time.monotonic(), packet))

    def _writer(self, link: _Link, q: queue.Queue[tuple[float, bytes] | None], sock: socket.socket) -> None:
        sent_at, budget = time.monotonic(), 0.0
        while True:
            item = q.get()
            if item is None or link.closed.is_set():
                return
            due, data = item
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            view = memoryview(data)
            while view:
                rate = self.bandwidth_bps
                piece = view[: 4096 if rate else len(view)]
                if rate:
                    now = time.monotonic()
                    budget = min(float(rate) / 10, budget + (now - sent_at) * rate)
                    sent_at = now
                    if budget < len(piece):
                        time.sleep((len(piece) - budget) / rate)
                        continue
                    budget -= len(piece)
                try:
                    n = sock.send(piece)
                except TimeoutError:  # the receiver is slow: keep trying while the link lives
                    if link.closed.is_set():
                        return
                    continue
                except OSError:
                    self._close(link)
                    return
                view = view[n:]
