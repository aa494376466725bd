"""Derived graphs are built in a child process; the screening process never imports onnx."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from models import graph_build


def test_a_refused_graph_comes_back_with_the_childs_reason(model_dir: pathlib.Path) -> None:
    with pytest.raises(graph_build.GraphBuildError, match=r"dnsmos-trunk graph from .*centerface.* ReduceMax"):
        graph_build.build("dnsmos-trunk", str(model_dir / "centerface.onnx"))
    with pytest.raises(graph_build.GraphBuildError, match="No such file"):
        graph_build.build("silero-sequence", str(model_dir / "missing.onnx"))
    assert graph_build.build("decimate", "3").startswith(b"\x08")  # a serialized ModelProto


def test_screening_audio_does_not_load_onnx_or_scipy(model_dir: pathlib.Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import agent.daemon
        from models import QcSettings, Screener
        from models.dnsmos import tiled_sessions
        screener = Screener(QcSettings(), model_dir={str(model_dir)!r})
        t = np.arange(3 * 48000) / 48000
        take = (0.2 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * t) > 0)).astype(np.float32)
        result = screener.audio(np.stack([take, take], axis=1), 48000)
        assert tiled_sessions(screener.session("dnsmos")) is not None
        assert [a.name for a in result.analyzers if a.name in ("silero-vad", "dnsmos")] == ["silero-vad", "dnsmos"]
        print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"onnx", "scipy", "pyloudnorm"}}))
        """
    )
    env = {**os.environ, "FIELDCAP_MODEL_DIR": str(model_dir)}
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
