"""Throwaway PostgreSQL and Kafka servers for tests, the demo and the benchmark.

This package starts REAL servers as local child processes (``postgres.py``, ``kafka.py``);
it never mocks them. This module holds what both need: the error they raise, a free-port
picker, process shutdown, and the ``Protocol`` types that the pytest fixtures return, so a
test can be written once for local processes or for Docker containers.

It is test tooling: the daemon itself must never import it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Protocol

__all__ = [
    "KafkaService",
    "PostgresService",
    "ServiceError",
    "free_port",
    "log_tail",
    "stop_process_group",
]

# How much of a server log a start-up error quotes: enough for PostgreSQL's FATAL line or a
# Kafka stack trace, short enough to read in a pytest failure.
LOG_TAIL_LINES = 40


class ServiceError(RuntimeError):
    """A throwaway server could not be installed, started or stopped."""


class PostgresService(Protocol):
    """What a test may rely on, whether PostgreSQL runs as a process or in a container."""

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """A libpq connection string for ``dbname`` as ``user``."""
        ...

    def stop(self) -> None:
        """Shut the server down; calling it again does nothing."""
        ...


class KafkaService(Protocol):
    """What a test may rely on, whether Kafka runs as a process or in a container."""

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` for the ``bootstrap.servers`` client property."""
        ...

    def stop(self) -> None:
        """Shut the broker down; calling it again does nothing."""
        ...


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    The kernel picks it (bind to port 0). Another process could take it before our server
    binds; on a test machine that race is rare enough, and start-up then fails loudly.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a log file, or a note when there is none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return f"last {len(tail)} lines of {path}:\n" + "\n".join(tail)


def stop_process_group(
    process: subprocess.Popen[bytes], first_signal: signal.Signals, timeout: float
) -> None:
    """Send ``first_signal`` to a server's process group; SIGKILL it if still alive later.

    The servers run in their own session (``start_new_session=True``), so the group holds
    the server and every child it forked (PostgreSQL backends, the JVM's helpers): killing
    the group leaves no orphan holding a port or shared memory.

    Args:
        process: the server started with ``start_new_session=True``.
        first_signal: SIGINT for a PostgreSQL fast shutdown, SIGTERM for a Kafka controlled
            shutdown, SIGKILL for a simulated crash.
        timeout: seconds to wait for a clean exit before SIGKILL.
    """
    if process.poll() is None:
        _signal_group(process.pid, first_signal)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # ProcessLookupError: the whole group has exited already, which is what we want.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
