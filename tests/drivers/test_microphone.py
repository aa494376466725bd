"""Microphones through PortAudio -> ALSA -> a private PulseAudio null sink (paced, like a real
device) and ALSA's ``file`` PCM (exact, unpaced content)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import pytest

from drivers import DriverOpenError, DriverTimeout, open_driver, parse_device_settings
from drivers.microphone import LOSS_TOLERANCE_S, Microphone
from drivers.settings import MicrophoneSettings

from .conftest import PulseAudio

pytestmark = pytest.mark.timeout(60)
RATE = 48000


def mic(device: str, **kw: object):  # type: ignore[no-untyped-def]
    return open_driver(
        parse_device_settings(
            {
                "name": "booth",
                "type": "microphone",
                "device": device,
                "channels": 2,
                "channel_names": ["near", "mid"],
                **kw,
            }
        )
    )


def test_paced_capture_is_stamped_by_sample_index(pulse: PulseAudio) -> None:
    t = np.arange(RATE * 4) / RATE
    tone = np.stack([0.5 * np.sin(2 * np.pi * 1000 * t), 0.125 * np.sin(2 * np.pi * 1000 * t)], 1)
    pulse.play((tone * 32767).astype("<i2").tobytes())
    with mic("fieldcap_pulse") as drv:
        force = drv.settings_in_force()
        t0 = time.monotonic()
        blocks = [drv.read(2) for _ in range(94)]  # ~2 s
        elapsed = time.monotonic() - t0
    assert elapsed > 1.5  # paced by the sink's clock, not faster than real time
    assert force["sample_rate"] == RATE and force["channel_names"] == ["near", "mid"]
    assert force["latency_compensated_ns"] == round(force["input_latency_s"] * 1e9)
    assert [b.device_time for b in blocks[:3]] == [0, 1024, 2048]
    assert all(b.payload.dtype == np.int16 and b.payload.shape == (1024, 2) for b in blocks)  # type: ignore[union-attr]
    stamps = np.array([b.t_mono_ns for b in blocks[-40:]], dtype=np.float64)
    period = np.diff(stamps).mean()
    assert period == pytest.approx(1024 / RATE * 1e9, rel=0.02)
    audio = np.concatenate([b.payload for b in blocks[-40:]]).astype(np.float64)  # type: ignore[misc]
    loud = np.abs(audio).max(axis=0)
    assert loud[0] > 10000 and loud[0] / loud[1] == pytest.approx(4, rel=0.1)
    spectrum = np.abs(np.fft.rfft(audio[:, 0]))
    assert np.argmax(spectrum) * RATE / len(audio) == pytest.approx(1000, abs=5)
    assert drv.stats.drops == drv.stats.overflows == 0


def test_file_pcm_delivers_exact_samples(pulse: PulseAudio) -> None:
    ref = (np.arange(RATE * 2 * 2) % 30011 - 15000).astype("<i2").reshape(-1, 2)
    (pulse.root / "infile.raw").write_bytes(ref.tobytes())
    with mic("fieldcap_file", queue_s=60) as drv:
        blocks = [drv.read(2) for _ in range(80)]
    got = np.concatenate([b.payload for b in blocks])  # type: ignore[misc]
    assert np.array_equal(got, ref[: len(got)])
    assert [b.seq for b in blocks] == list(range(80))


def test_slow_reader_drops_are_counted(pulse: PulseAudio) -> None:
    (pulse.root / "infile.raw").write_bytes(np.zeros(RATE * 20, "<i2").tobytes())
    with mic("fieldcap_file", queue_s=0.1) as drv:  # unpaced source, 5-block queue
        first = drv.read(2)
        before = drv.stats.drops
        time.sleep(0.3)
        later = drv.read(2)
    dropped = drv.stats.drops - before
    assert dropped > 0
    assert later.device_time - first.device_time == (dropped + 1) * 1024  # type: ignore[operator]


def test_unknown_device_lists_the_inputs(pulse: PulseAudio) -> None:
    with pytest.raises(DriverOpenError, match=r"matches no input device.*fieldcap_pulse"):
        mic("no-such-microphone")


def test_unsupported_channel_count_is_a_clear_error(pulse: PulseAudio) -> None:
    with pytest.raises(DriverOpenError, match="cannot open audio input"):
        open_driver(
            parse_device_settings({"name": "m", "type": "microphone", "device": "fieldcap_pulse", "channels": 64})
        )


class StallingMicrophone(Microphone):
    """A microphone whose audio callback blocks once, like a starved or GC-paused thread."""

    stall_after_blocks = 40
    stall_s = 8.0

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        super()._callback(indata, frames, time_info, status)
        if self._index == self.stall_after_blocks * frames:
            time.sleep(self.stall_s)


def test_stall_longer_than_the_server_buffer_is_a_counted_drop(pulse: PulseAudio) -> None:
    """A real overflow: PulseAudio keeps 4 MiB of a record stream (5.5 s of 8 x 48 kHz int16),
    so an 8 s callback stall loses ~2.5 s inside the server, which PortAudio never flags. The
    ramp played in (a frame counter in channels 0 and 1) tells exactly how much was lost."""
    channels, seconds = 8, 18
    counter = np.arange(RATE * seconds)
    ramp = np.zeros((len(counter), channels), "<i2")
    ramp[:, 0] = counter & 0x7FFF
    ramp[:, 1] = counter >> 15
    pulse.play(ramp.tobytes(), channels=channels, sink="fcnull8", latency_ms=1000)
    settings = parse_device_settings(
        {"name": "booth", "type": "microphone", "device": "fieldcap_pulse8", "channels": channels, "queue_s": 30}
    )
    assert isinstance(settings, MicrophoneSettings)
    with StallingMicrophone(settings) as drv:
        blocks = []
        deadline = time.monotonic() + 14
        while time.monotonic() < deadline:
            with contextlib.suppress(DriverTimeout):
                blocks.append(drv.read(1))
        stats = drv.stats
    content = np.concatenate([b.payload for b in blocks]).astype(np.int64)  # type: ignore[misc]
    played = content[:, 0] | content[:, 1] << 15
    frame_no = np.flatnonzero(played)  # zeros: silence before the player started, or its underruns
    played = played[frame_no]
    steps = np.diff(played)
    assert (steps >= 1).all()  # nothing repeated or reordered
    # every hole in the ramp: (first captured frame after it, frames lost)
    holes = [(int(frame_no[j + 1]), int(steps[j] - 1)) for j in np.flatnonzero(steps != 1)]
    starts = np.cumsum([0] + [len(b.payload) for b in blocks])  # type: ignore[arg-type]
    marked = [(int(starts[i]), b) for i, b in enumerate(blocks) if b.meta.get("overflow")]
    # Every lost frame is counted, within LOSS_TOLERANCE_S (shorter losses are invisible by
    # design). On a starved machine an overflow can come in many pieces (thousands of frames
    # each) instead of one hole; the driver sees one late episode and counts them together. So
    # holes less than half a second of audio apart form one episode, compared by its total.
    tolerance = LOSS_TOLERANCE_S * RATE
    slack = 1024 + 0.05 * RATE  # a declared hole sits at a block boundary near the loss
    episodes: list[list[tuple[int, int]]] = []
    for h in holes:
        if episodes and h[0] - episodes[-1][-1][0] <= RATE // 2:
            episodes[-1].append(h)
        else:
            episodes.append([h])

    def declared_in(episode: list[tuple[int, int]]) -> list[tuple[int, Any]]:
        return [(start, b) for start, b in marked if episode[0][0] - slack <= start <= episode[-1][0] + slack]

    for episode in episodes:
        lost = sum(n for _, n in episode)
        if lost > tolerance + 0.05 * RATE:
            found = sum(b.meta["lost_frames"] or 0 for _, b in declared_in(episode))
            assert abs(found - lost) <= tolerance, (lost, found, episode[:3], len(episode), marked)
    # the stall's episode is there and the driver found it from arrival times ...
    stall = max(episodes, key=lambda e: sum(n for _, n in e))
    assert sum(n for _, n in stall) > 1.5 * RATE, stall[:5]  # 8 s stall, 5.5 s of server buffer
    found_here = [(start, b) for start, b in declared_in(stall) if b.meta.get("lost_frames")]
    assert found_here, (stall[:5], marked)
    hole_start, hole = found_here[0]
    assert hole.meta["loss_detected_by"] == "arrival-timing"
    # ... placed at a block boundary where the loss is, and device_time keeps the device's
    # timeline: the block after the hole is numbered past it
    lost_so_far = sum(b.meta["lost_frames"] or 0 for start, b in marked if start <= hole_start)
    assert hole.device_time == hole_start + lost_so_far
    assert hole.meta["clock_segment"] > blocks[0].meta["clock_segment"]
    for start, b in marked:  # and no loss is declared where none happened
        assert any(abs(start - h_at) <= 1024 + 0.05 * RATE for h_at, _ in holes), (holes, start, b.meta)
    assert stats.overflows == len(marked)
    declared = sum(b.meta["lost_frames"] or 0 for _, b in marked)
    assert stats.drops == pytest.approx(declared / 1024, abs=3 * len(marked))  # counted in blocks
    assert "lost before capture" in (stats.last_error or "")
    # time stamps stay on the host clock across the hole (within the detection tolerance)
    span = (blocks[-1].t_mono_ns - blocks[0].t_mono_ns) / 1e9
    assert span == pytest.approx((blocks[-1].device_time - blocks[0].device_time) / RATE, abs=0.1)  # type: ignore[operator]
