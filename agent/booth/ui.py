"""The booth's full-screen terminal UI (rich): draws a ``Booth`` ten times a second and feeds it keys.

Layout, top to bottom: who and where (session, subject pseudonym, round, progress), the prompt in
large type with its plain text and instructions, what is happening (ready, countdown, a red
recording indicator with elapsed and longest time, checking), one live level bar per microphone
with its warning, the QC verdict with its reasons, messages, and the keys that work right now.

Keys are read from the terminal in cbreak mode (no Enter needed; Ctrl-C still interrupts and is
treated as quit). While the UI is up, log records go to ``DATA_DIR/booth.log`` and warnings are
shown in the message area, so nothing writes over the screen.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal
import sys
import termios
import tty
from collections import deque
from collections.abc import Iterator
from types import FrameType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from agent.booth.bigtext import big_lines
from agent.booth.instant_qc import worst
from agent.booth.levels import ChannelLevel
from agent.booth.session import Booth, Phase
from agent.booth.station import BoothError

__all__ = ["render", "run_ui"]

FPS = 10
METER_FLOOR_DB = -60.0
VERDICT_STYLE = {"pass": "bold green", "review": "bold yellow", "fail": "bold red"}


# ---------------------------------------------------------------------------- drawing


def _header(booth: Booth) -> RenderableType:
    s = booth.session
    total = len(booth.items)
    done = booth.accepted_items()
    width = 30
    filled = round(width * done / len(s.items)) if s.items else 0
    head = Text.assemble(
        ("fieldcap booth", "bold"),
        f"  session {s.session_id}  subject {(s.subject_pseudonym or '-')[:12]}  round {s.round_no}",
        f"  script {s.script}" if s.script else "",
        ("  RE-RECORD" if booth.rerecord else "", "bold magenta"),
    )
    progress = Text.assemble(
        f"item {min(booth.index + 1, total)} of {total}  ",
        ("█" * filled, "green"),
        ("░" * (width - filled), "dim"),
        f"  {done} of {len(s.items)} items accepted",
    )
    return Panel(Group(head, progress), padding=(0, 1))


def _prompt(booth: Booth, width: int, height: int) -> RenderableType:
    if booth.phase is Phase.PAUSED:
        return Panel(Text("Paused\n\npress [p] to go on", justify="center", style="bold"), title="prompt")
    if booth.phase is Phase.MIC_TEST:
        lines = [
            Text("MIC TEST", style="bold cyan", justify="center"),
            Text(""),
            Text("Ask the subject to say a sentence at the loudness they will read with.", justify="center"),
            Text("Each microphone should show speech peaks without clipping.", justify="center"),
            Text(""),
        ]
        for mic, r in booth.mic_test_report().items():
            style = "green" if r["status"] == "ok" else "red" if r["status"] in ("clipping", "no audio") else "yellow"
            peak = "-" if r["peak_dbfs"] is None else f"{r['peak_dbfs']:.1f} dBFS"
            floor = "-" if r["noise_floor_dbfs"] is None else f"{r['noise_floor_dbfs']:.1f} dBFS"
            lines.append(Text.assemble(f"{mic:>18}  peak {peak:>11}  noise floor {floor:>11}  ", (r["status"], style)))
        return Panel(Group(*lines), title="mic test")
    if booth.phase is Phase.DONE:
        cov = booth.coverage
        missing = cov.missing if cov else []
        if not missing:
            body = [Text("Every item has an accepted take.", style="bold green", justify="center")]
        else:
            items = sorted({c.item_id for c in missing})
            body = [
                Text(f"{len(items)} item(s) still lack an accepted take:", style="bold yellow", justify="center"),
                Text(", ".join(items[:30]) + (" ..." if len(items) > 30 else ""), justify="center"),
            ]
        body.append(Text("\n[n] record the next missing item   [e] end the session   [q] quit", justify="center"))
        return Panel(Group(*body), title="script complete")
    item = booth.item
    parts: list[RenderableType] = []
    reserve = 3 + (1 if item.instructions else 0)
    big = big_lines(item.text, max(10, width - 4), max(3, height - 2 - reserve))
    if big is not None:
        parts += [Text(line, style="bold") for line in big]
        parts.append(Text(""))
        parts.append(Text(item.text, justify="center"))
    else:
        parts.append(Text(item.text, style="bold", justify="center"))
    if item.instructions:
        parts.append(Text(item.instructions, style="italic cyan", justify="center"))
    title = f"{item.item_id} · {item.type} · longest take {item.max_duration_s:g} s"
    return Panel(Group(*parts), title=title, padding=(0, 1))


def _status(booth: Booth) -> RenderableType:
    phase = booth.phase
    take = booth.item_take()
    if phase is Phase.RECORDING:
        elapsed = booth.recording_elapsed()
        text = Text.assemble(
            ("● REC ", "bold white on red"),
            f"  {elapsed:5.1f} s of at most {booth.item.max_duration_s:g} s   press space to stop",
        )
    elif phase is Phase.COUNTDOWN:
        text = Text.assemble(("COUNTDOWN ", "bold yellow"), (str(booth.countdown_left()), "bold yellow reverse"))
    elif phase is Phase.CHECKING:
        text = Text("checking the take ...", style="bold cyan")
    elif phase is Phase.READY:
        where = "" if take is None else f"   (take {take.take_no} recorded before: {take.status})"
        text = Text.assemble(("READY", "bold green"), "  press space to record" + where)
    elif phase is Phase.REVIEW and booth.current is not None:
        cur = booth.current
        text = Text.assemble(
            ("TAKE ", "bold"),
            f"{cur.take.take_no} of {cur.take.item_id}: {cur.result.status}, {cur.result.duration_s:.1f} s",
            f" (supersedes take {cur.take.take_no - 1})" if cur.take.supersedes else "",
        )
    else:
        text = Text(phase.value.upper(), style="bold")
    return Panel(text, padding=(0, 1))


def _bar(level: ChannelLevel, width: int) -> Text:
    def cells(db: float) -> int:
        if math.isinf(db):
            return 0
        return max(0, min(width, round(width * (db - METER_FLOOR_DB) / -METER_FLOOR_DB)))

    n, hold = cells(level.peak_dbfs), cells(level.hold_dbfs)
    bar = Text()
    for i in range(width):
        db = METER_FLOOR_DB * (1 - (i + 1) / width)
        colour = "red" if db > -3 else "yellow" if db > -12 else "green"
        if i < n:
            bar.append("█", colour)
        elif i == hold - 1:
            bar.append("│", colour)
        else:
            bar.append("·", "dim")
    return bar


def _levels(booth: Booth, width: int) -> RenderableType:
    rows = []
    bar_width = max(10, min(50, width - 60))
    for level in booth.levels():
        peak = "  -inf" if math.isinf(level.peak_dbfs) else f"{level.peak_dbfs:6.1f}"
        warning = level.warning
        rows.append(
            Text.assemble(
                f"{level.mic:>16} ",
                _bar(level, bar_width),
                f" {peak} dBFS  ",
                (warning or "", "bold red" if level.clipping or level.stale else "bold yellow"),
            )
        )
    return Panel(Group(*rows) if rows else Text("no microphone"), title="levels", padding=(0, 1))


def _qc(booth: Booth) -> RenderableType:
    cur = booth.current
    lines: list[Text] = []
    if booth.phase is Phase.REVIEW and cur is not None:
        verdict, source, reasons = cur.shown()
        if verdict is None:
            lines.append(Text(cur.check_error or "QC: no verdict yet", style="yellow"))
        else:
            label = "full" if source == "full" else "instant, DNSMOS pending"
            lines.append(
                Text.assemble(
                    f"QC {source}: ",
                    (verdict.upper(), VERDICT_STYLE.get(verdict, "bold")),
                    f"   ({label}; shown {cur.latency_s:.2f} s after stop, take committed after"
                    f" {cur.committed_s:.2f} s)",
                )
            )
            if source == "instant":
                for check in cur.checks:
                    for reason in check.reasons:
                        colour = "red" if check.verdict == "fail" else "yellow"
                        lines.append(Text(f"  {check.mic}: {reason}", style=colour))
                if not reasons:
                    lines.append(Text("  no problem found", style="green"))
            else:
                lines += [Text(f"  {r}", style="red" if verdict == "fail" else "yellow") for r in reasons]
                if not reasons:
                    lines.append(Text("  no problem found", style="green"))
        if cur.result.errors:
            lines += [Text(f"  take: {e}", style="red") for e in cur.result.errors]
    elif booth.phase is Phase.READY:
        take = booth.item_take()
        if take is not None and take.verdicts:
            verdict = worst([v.verdict for v in take.verdicts_by_mic().values()])
            state = "accepted" if take.accepted else "not accepted"
            verdict_text = (verdict.upper(), VERDICT_STYLE.get(verdict, ""))
            lines.append(Text.assemble(f"take {take.take_no}: QC ", verdict_text, f", {state}"))
            lines += [Text(f"  {r}", style="dim") for r in take.labelled_reasons()]
    return Panel(Group(*lines) if lines else Text(""), title="QC", padding=(0, 1))


def _footer(booth: Booth, log_lines: deque[str]) -> RenderableType:
    parts: list[RenderableType] = []
    if booth.message:
        parts.append(Text(booth.message, style="bold yellow"))
    for notice in booth.notices[-2:]:
        parts.append(Text(notice, style="bold red"))
    for line in list(log_lines)[-1:]:
        parts.append(Text(line, style="red"))
    keys = Text()
    for key, what in booth.key_help():
        keys.append(f" [{key}] ", "bold reverse")
        keys.append(f" {what}  ")
    parts.append(keys)
    return Panel(Group(*parts), padding=(0, 1))


def render(booth: Booth, width: int, height: int, log_lines: deque[str] | None = None) -> Layout:
    """The whole screen for the booth's current state."""
    log_lines = log_lines if log_lines is not None else deque()
    mics = max(1, len(booth.levels()))
    cur = booth.current
    qc_rows = 2 + (1 + sum(len(c.reasons) for c in cur.checks) + len(cur.result.errors) if cur else 2)
    footer_rows = 3 + bool(booth.message) + min(2, len(booth.notices)) + min(1, len(log_lines))
    fixed = {"header": 4, "status": 3, "levels": mics + 2, "qc": min(10, max(3, qc_rows)), "footer": footer_rows}
    prompt_rows = max(6, height - sum(fixed.values()))
    layout = Layout()
    layout.split_column(
        Layout(_header(booth), size=fixed["header"]),
        Layout(_prompt(booth, width, prompt_rows), size=prompt_rows),
        Layout(_status(booth), size=fixed["status"]),
        Layout(_levels(booth, width), size=fixed["levels"]),
        Layout(_qc(booth), size=fixed["qc"]),
        Layout(_footer(booth, log_lines), size=fixed["footer"]),
    )
    return layout


# ---------------------------------------------------------------------------- keys and the loop


class TerminalKeys:
    """Single keys from a terminal in cbreak mode, restored on exit."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: list[Any] | None = None

    def __enter__(self) -> TerminalKeys:
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def read(self, timeout: float) -> list[str]:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        data = os.read(self.fd, 64).decode("utf-8", errors="ignore")
        keys: list[str] = []
        i = 0
        while i < len(data):
            ch = data[i]
            if ch == "\x1b":
                if data[i + 1 : i + 2] in ("[", "O"):  # an arrow or function key: not used
                    i += 3
                    continue
                keys.append("esc")
            elif ch in "\r\n":
                keys.append("enter")
            elif ch == " ":
                keys.append("space")
            elif ch.isprintable():
                keys.append(ch)
            i += 1
        return keys


class _ScreenLog(logging.Handler):
    """Keeps the newest warnings for the screen."""

    def __init__(self, lines: deque[str]) -> None:
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _logs_off_screen(booth: Booth, lines: deque[str]) -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:]
    file_handler = logging.FileHandler(booth.station.data_dir / "booth.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [file_handler, _ScreenLog(lines)]
    try:
        yield
    finally:
        root.handlers = saved
        file_handler.close()


def run_ui(booth: Booth, *, console: Console | None = None) -> None:
    """Run the booth in the terminal until the operator quits (Ctrl-C and SIGTERM quit too)."""
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise BoothError("the booth needs an interactive terminal (stdin and stdout must be a tty)")
    console = console or Console()
    log_lines: deque[str] = deque(maxlen=20)
    stop_requested: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop_requested.append(signum)  # handled by the loop: never in the middle of a catalog write

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with (
            _logs_off_screen(booth, log_lines),
            TerminalKeys(sys.stdin.fileno()) as keys,
            Live(console=console, screen=True, auto_refresh=False) as live,
        ):
            while not booth.finished:
                for key in keys.read(1.0 / FPS):
                    booth.key(key)
                if stop_requested and booth.phase is not Phase.QUIT:
                    stop_requested.clear()
                    booth.quit_after_check = True
                    booth.key("q")  # aborts a take being recorded (kept, marked aborted); quits otherwise
                booth.tick()
                size = console.size
                live.update(render(booth, size.width, size.height, log_lines), refresh=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
