"""A throwaway RTSP server for the driver tests (run by the *system* python3 with python3-gi).

Usage: rtsp_server.py PORT [WIDTH HEIGHT FPS]. Serves rtsp://127.0.0.1:PORT/test (a live test
pattern as RTP/JPEG) and prints "READY" once listening. Tests kill it to test end-of-stream and
reconnect, and SIGSTOP it to test read timeouts.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port = sys.argv[1]
    width, height, fps = sys.argv[2:5] + ["640", "480", "10"][len(sys.argv[2:5]) :]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width={width},"
        f"height={height},framerate={fps}/1 ! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=96 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        print("FAILED to attach", flush=True)
        sys.exit(1)
    print("READY", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
