"""Throwaway PostgreSQL and Kafka servers for tests, the demo and the benchmark.

This package starts REAL servers as local child processes (``postgres.py``, ``kafka.py``);
it never mocks them. This module holds what both need: the error they raise, a free-port
picker, process shutdown, the ``ManagedProcess`` base that gives both server classes the
same stop/kill/restart lifecycle, and the ``Protocol`` types that the pytest fixtures return, so a
test can be written once for local processes or for Docker containers.

It is test tooling: the daemon itself must never import it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Protocol, Self

__all__ = [
    "KafkaService",
    "ManagedProcess",
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


class ManagedProcess:
    """The lifecycle shared by the throwaway servers: one child process, run in its own
    session, that can be stopped cleanly, killed, restarted and used as a context manager.

    A subclass (a slotted dataclass) declares the ``_process`` field (``None`` until
    started, ``repr=False``), sets ``_stop_signal`` and ``_stop_timeout``, and implements
    ``_spawn`` and ``_wait_ready``: only how its server is launched, shut down and probed
    differs.
    """

    # The slot lives here so these methods may assign it; the dataclass fields of a
    # subclass skip inherited slots (Python 3.11+).
    __slots__ = ("_process",)

    _process: subprocess.Popen[bytes] | None
    #: The signal of a clean shutdown; kill() always sends SIGKILL.
    _stop_signal: ClassVar[signal.Signals]
    #: Seconds a clean shutdown may take before SIGKILL.
    _stop_timeout: ClassVar[float]

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The server's process id (its process group's too: it runs in its own session).

        Raises:
            ServiceError: the server is not running.
        """
        if self._process is None:
            raise ServiceError("the server is not running")
        return self._process.pid

    def stop(self) -> None:
        """Shut down with ``_stop_signal``; SIGKILL after ``_stop_timeout``. Idempotent."""
        if self._process is not None:
            stop_process_group(self._process, self._stop_signal, self._stop_timeout)
            self._process = None

    def kill(self) -> None:
        """SIGKILL the server and every process it forked at once, like a crash."""
        if self._process is not None:
            stop_process_group(self._process, signal.SIGKILL, self._stop_timeout)
            self._process = None

    def restart(self) -> None:
        """Start the server again on the same data folder and ports; stop it first if up."""
        self.stop()
        self._process = self._spawn()
        self._wait_ready()

    def _start(self) -> None:
        """Start the server the first time: stop it at interpreter exit, or now if it fails.

        A test run that dies before its fixtures finish must not leave a server behind.
        """
        self._process = self._spawn()
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Launch the server process in its own session (``start_new_session=True``)."""
        raise NotImplementedError

    def _wait_ready(self) -> None:
        """Return once the server serves clients; raise ``ServiceError`` otherwise."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
