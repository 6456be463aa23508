"""A test's HTTP server, served from a thread that its ``shutdown()`` stops at once."""
from __future__ import annotations

import socketserver
import threading

# serve_forever looks for shutdown() this often: its default (0.5 s) made every stop wait that long.
SHUTDOWN_POLL_SECONDS = 0.02


def serve_in_thread(server: socketserver.BaseServer) -> threading.Thread:
    """Start serving ``server`` from a daemon thread; ``server.shutdown()`` stops it."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
                              daemon=True)
    thread.start()
    return thread
