"""What each connector is doing, for humans and probes: ``/status``, ``/healthz``, ``/metrics``.

The one job: keep a small, thread-safe board of per-connector state (phase, positions,
snapshot progress, last error) that the pipelines update at state changes and about once
a second, and serve it over HTTP beside Prometheus' metrics. No per-event work here.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["BOARD", "StatusBoard", "start_status_server"]

# Phases a connector goes through; /healthz is healthy while every connector is in one
# of the working phases.
WORKING = frozenset({"starting", "snapshotting", "streaming"})


class StatusBoard:
    """Per-connector status documents, replaced field by field under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connectors: dict[str, dict[str, Any]] = {}
        # A fleet member's view (fleet.group): group, instance, owned connectors.
        self._fleet: dict[str, Any] | None = None

    def update(self, connector: str, **fields: Any) -> None:
        with self._lock:
            entry = self._connectors.setdefault(connector, {"connector": connector})
            entry.update(fields)
            entry["updated_at"] = time.time()

    def snapshot_progress(self, connector: str, table: str, **fields: Any) -> None:
        """Progress of one table of the running snapshot."""
        with self._lock:
            entry = self._connectors.setdefault(connector, {"connector": connector})
            tables = entry.setdefault("snapshot", {}).setdefault("tables", {})
            tables.setdefault(table, {}).update(fields)

    def remove(self, connector: str) -> None:
        """Forget a connector this instance no longer runs (handed to another in a fleet)."""
        with self._lock:
            self._connectors.pop(connector, None)

    def set_fleet(self, **fields: Any) -> None:
        """The fleet member's state, beside the connectors'."""
        with self._lock:
            self._fleet = {**(self._fleet or {}), **fields}

    def document(self) -> dict[str, Any]:
        with self._lock:
            connectors = [orjson.loads(orjson.dumps(c)) for c in self._connectors.values()]
            fleet = None if self._fleet is None else orjson.loads(orjson.dumps(self._fleet))
        # A fleet instance that owns nothing is a healthy standby.
        healthy = (bool(connectors) or fleet is not None) and all(
            c.get("phase") in WORKING for c in connectors
        )
        document: dict[str, Any] = {"healthy": healthy, "connectors": connectors}
        if fleet is not None:
            document["fleet"] = fleet
        return document

    def clear(self) -> None:
        with self._lock:
            self._connectors.clear()
            self._fleet = None


BOARD = StatusBoard()


class _Handler(BaseHTTPRequestHandler):
    board: StatusBoard = BOARD

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, CONTENT_TYPE_LATEST, generate_latest())
        elif path == "/status":
            body = orjson.dumps(self.board.document(), option=orjson.OPT_INDENT_2)
            self._reply(200, "application/json", body)
        elif path == "/healthz":
            healthy = self.board.document()["healthy"]
            self._reply(200 if healthy else 503, "text/plain", b"ok\n" if healthy else b"no\n")
        else:
            self._reply(404, "text/plain", b"try /status, /healthz or /metrics\n")

    def _reply(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # probes every few seconds would flood the daemon's log


def start_status_server(host: str, port: int) -> ThreadingHTTPServer:
    """Serve /metrics, /status and /healthz from a daemon thread; returns the server."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="status-http", daemon=True).start()
    return server
