"""A throwaway HTTP MJPEG camera for the driver tests (multipart/x-mixed-replace, like IP cameras).

Usage: mjpeg_server.py PORT [WIDTH HEIGHT FPS]. Serves http://127.0.0.1:PORT/video.mjpg and prints
"READY" once listening. Frames are paced on the server's clock (frame N is due at start + N/FPS,
the same for every client, like a camera that runs whether anyone watches); a client that falls
behind misses frames, as with a real camera. Each frame carries its index twice: as text, and as a
16-bit barcode of black/white blocks along the bottom edge that survives JPEG (``decode_index``).
Tests kill the process to test end-of-stream and reconnect, and SIGSTOP it to stall the stream
with the TCP connection still up.
"""

from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

BOUNDARY = "fieldcapframe"
BITS = 16


def render(width: int, height: int, index: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """A BGR frame with ``index`` as text and as a barcode on the bottom rows."""
    frame = np.full((height, width, 3), 96, np.uint8)
    frame[:, :, 1] = (np.arange(width)[None, :] + index * 4) % 256  # motion, so frames differ
    cv2.putText(frame, f"#{index}", (8, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2)
    block = width // BITS
    bar = frame[height - 16 :, :]
    bar[:] = 0
    for bit in range(BITS):
        if index >> bit & 1:
            bar[:, bit * block : (bit + 1) * block] = 255
    return frame


def decode_index(frame: np.ndarray[Any, Any]) -> int:
    """The frame index drawn by ``render`` (works on decoded JPEG, BGR or grey)."""
    height, width = frame.shape[:2]
    block = width // BITS
    rows = frame[height - 12 : height - 4]
    value = 0
    for bit in range(BITS):
        cell = rows[:, bit * block + 2 : (bit + 1) * block - 2]
        if float(cell.mean()) > 128:
            value |= 1 << bit
    return value


def main() -> None:
    port = int(sys.argv[1])
    width, height, fps = (int(v) for v in sys.argv[2:5] + ["320", "240", "10"][len(sys.argv[2:5]) :])
    start = time.monotonic()
    period = 1.0 / fps
    cache: dict[int, bytes] = {}
    cache_lock = threading.Lock()

    def jpeg(index: int) -> bytes:
        with cache_lock:
            data = cache.get(index)
            if data is None:
                ok, buf = cv2.imencode(".jpg", render(width, height, index), [cv2.IMWRITE_JPEG_QUALITY, 85])
                assert ok
                data = buf.tobytes()
                cache.clear()
                cache[index] = data
            return data

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != "/video.mjpg":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            index = int((time.monotonic() - start) / period) + 1
            try:
                while True:
                    due = start + index * period
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    else:  # fell behind (slow client): skip to the current frame
                        index = max(index, int((time.monotonic() - start) / period))
                    data = jpeg(index)
                    head = (
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(data)}\r\nX-Frame-Index: {index}\r\n\r\n"
                    )
                    self.wfile.write(head.encode() + data + b"\r\n")
                    self.wfile.flush()
                    index += 1
            except (BrokenPipeError, ConnectionResetError):
                return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
