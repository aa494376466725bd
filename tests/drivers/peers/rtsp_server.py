"""A throwaway RTSP server for the driver tests (run by the *system* python3 with python3-gi).

Usage: rtsp_server.py PORT [WIDTH HEIGHT FPS [KIND]]. Serves rtsp://127.0.0.1:PORT/test and prints
"READY" once listening. Tests kill it to test end-of-stream and reconnect, and SIGSTOP it to test
read timeouts. KIND:

- ``jpeg`` (default): a live test pattern as RTP/JPEG (8-bit).
- ``j2k16``: 16-bit grey frames, JPEG 2000 lossless in MPEG-TS over RTP, as a radiometric
  camera would send them. Every pixel is known: ``(x * 257 + y * 509 + 1000) % 65536`` except
  pixel (0, 0), the frame index, and (1, 0), the marker 0xA5A5 (see ``j2k16_expected``).
"""

import array
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def j2k16_expected(width: int, height: int) -> "array.array[int]":
    """The pixels of every ``j2k16`` frame but the first two (row-major)."""
    return array.array("H", [(x * 257 + y * 509 + 1000) % 65536 for y in range(height) for x in range(width)])


def main() -> None:
    port = sys.argv[1]
    width, height, fps = (int(v) for v in sys.argv[2:5] + ["640", "480", "10"][len(sys.argv[2:5]) :])
    kind = sys.argv[5] if len(sys.argv) > 5 else "jpeg"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    if kind == "jpeg":
        factory.set_launch(
            f"( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width={width},"
            f"height={height},framerate={fps}/1 ! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=96 )"
        )
    elif kind == "j2k16":
        factory.set_launch(
            f"( appsrc name=src is-live=true format=time do-timestamp=true caps=video/x-raw,"
            f"format=GRAY16_LE,width={width},height={height},framerate={fps}/1 ! openjpegenc ! "
            "image/x-jpc,alignment=frame ! mpegtsmux ! rtpmp2tpay name=pay0 pt=33 )"
        )
        base = j2k16_expected(width, height)
        start = time.monotonic()

        def configure(_factory: object, media: GstRtspServer.RTSPMedia) -> None:
            src = media.get_element().get_child_by_name("src")

            def push() -> bool:
                frame = array.array("H", base)
                frame[0] = int((time.monotonic() - start) * fps) % 65536
                frame[1] = 0xA5A5
                if sys.byteorder != "little":
                    frame.byteswap()
                return bool(src.emit("push-buffer", Gst.Buffer.new_wrapped(frame.tobytes())) == Gst.FlowReturn.OK)

            GLib.timeout_add(max(1, 1000 // fps), push)

        factory.connect("media-configure", configure)
    else:
        print(f"FAILED unknown kind {kind!r}", flush=True)
        sys.exit(2)
    factory.set_shared(True)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        print("FAILED to attach", flush=True)
        sys.exit(1)
    print("READY", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
