"""MLX90640-style UART thermal frames through a pty: values, resync, garbage."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import open_driver, parse_device_settings
from drivers.thermal_uart import FRAME_BYTES, FrameParser, encode_frame

from .conftest import Pty

PIXELS = np.arange(768, dtype=np.int16).reshape(24, 32) * 3 + 2150  # 21.50 .. 44.51 degC


def array(port: str, **kw: object):  # type: ignore[no-untyped-def]
    return open_driver(
        parse_device_settings({"name": "mlx", "type": "thermal-uart", "port": port, "exclusive": False, **kw})
    )


def test_frames_become_centikelvin(pty: Pty) -> None:
    with array(pty.path, emissivity=0.9) as drv:
        pty.write(encode_frame(PIXELS, 2512) + encode_frame(PIXELS - 3000, -150))
        a, b = drv.read(2), drv.read(2)
        force = drv.settings_in_force()
    assert a.payload.dtype == np.uint16 and a.payload.shape == (24, 32)  # type: ignore[union-attr]
    assert np.array_equal(a.payload, PIXELS.astype(np.int32) + 27315)  # type: ignore[arg-type]
    assert np.array_equal(b.payload, PIXELS.astype(np.int32) - 3000 + 27315)  # type: ignore[arg-type]
    assert (a.meta["ambient_c"], b.meta["ambient_c"]) == (25.12, -1.5)
    assert (a.device_time, b.device_time) == (0, 1)
    assert force["units"] == "centikelvin" and force["emissivity"] == 0.9
    assert force["baudrate"] == 115200


def test_corrupt_and_truncated_frames_cost_one_frame_each(pty: Pty) -> None:
    good = encode_frame(PIXELS, 2500)
    corrupt = bytearray(good)
    corrupt[500] ^= 0x40
    with array(pty.path) as drv:
        pty.write(b"\x13\x37" + bytes(corrupt) + good[:700] + good)
        sample = drv.read(2)
        assert sample.meta["ambient_c"] == 25.0
        assert drv.stats.bad_frames == 3  # stray bytes, corrupt frame, truncated frame


def test_wrong_length_field_is_rejected() -> None:
    frame = bytearray(encode_frame(PIXELS, 0))
    frame[2] ^= 1
    parser = FrameParser()
    parser.feed(bytes(frame) + encode_frame(PIXELS, 7))
    got = parser.next_frame()
    assert got is not None and got[1] == 7
    assert parser.bad[0].startswith("length field")


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=2 * FRAME_BYTES), st.integers(0, FRAME_BYTES - 1))
def test_parser_survives_garbage_and_cuts(garbage: bytes, cut: int) -> None:
    good = encode_frame(PIXELS, 1234)
    parser = FrameParser()
    stream = garbage + good[:cut] + good
    for i in range(0, len(stream), 97):  # arrives in pieces, as from a UART
        parser.feed(stream[i : i + 97])
    frames = []
    while (got := parser.next_frame()) is not None:
        frames.append(got)
    assert frames, "the good frame must be found"
    assert np.array_equal(frames[-1][0], PIXELS) and frames[-1][1] == 1234


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(min_size=1, max_size=3000))
def test_driver_survives_garbage_on_the_line(garbage: bytes) -> None:
    with array("loop://") as drv:
        drv._port.write(garbage + encode_frame(PIXELS, 99))  # type: ignore[union-attr]
        sample = drv.read(2)
        while sample.meta["ambient_c"] != 0.99:
            sample = drv.read(2)
