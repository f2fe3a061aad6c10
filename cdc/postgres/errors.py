"""The one place where psycopg's errors become ours, with their fix.

Every PostgreSQL call of ``cdc`` maps its ``psycopg.Error`` here, so the daemon's
decision is the same everywhere: a lost connection, a server restart or a slot still held
by a dying walsender heal by themselves (the connector restarts with backoff); a wrong
password, a missing privilege, a database that does not exist or a DSN that is not a
connection string do not: the connector stops with the fix in one line.

Connection failures carry no SQLSTATE in psycopg (libpq reports them as text), so they
are classified by the server's message; errors of an open session by their SQLSTATE.
"""

from __future__ import annotations

import psycopg

from cdc.errors import SourceError, TargetError

__all__ = ["source_error", "target_error"]

# SQLSTATE classes and codes a restart can heal: connection exceptions, transaction
# rollbacks (serialization, deadlock), insufficient resources (too many connections),
# operator intervention (shutdown, cannot connect now), "object in use" (a replication
# slot still held by a walsender that is going away), internal errors.
_RETRYABLE_CLASSES = ("08", "40", "53", "57", "XX")
_RETRYABLE_CODES = frozenset({"55006", "58030"})

# Connection failures a person must fix: (any of these in the message, the fix).
_CONNECTION_FIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("must be superuser or replication role", "permission denied to start wal sender"),
        "the role needs the REPLICATION attribute: ALTER ROLE <user> REPLICATION (and"
        " SELECT on the published tables)",
    ),
    (
        ("password authentication failed", "no password supplied"),
        "check the password postgres.dsn gives (e.g. the environment variable it reads)",
    ),
    (
        ("no pg_hba.conf entry",),
        "pg_hba.conf must allow this host a connection (for replication, a line with the"
        " database name, not only 'replication')",
    ),
    # TLS (libpq's texts; docs: libpq SSL Support). The most specific first.
    (
        ("certificate verify failed",),
        "the server's certificate is not trusted by the CA in sslrootcert (wrong CA file,"
        " or the certificate expired): set sslrootcert in postgres.dsn to the CA that signed"
        " the server's certificate (sslrootcert=system for a public CA), keep"
        " sslmode=verify-full",
    ),
    (
        ("does not match host name",),
        "the host in postgres.dsn is not a name the server's certificate lists"
        " (subjectAltName), which sslmode=verify-full requires: connect by a name or address"
        " the certificate holds, or have the certificate reissued with it",
    ),
    (
        ("root certificate file",),
        "the sslrootcert file in postgres.dsn does not exist or cannot be read: point"
        " sslrootcert at the CA certificate (PEM) that signed the server's certificate",
    ),
    (
        ("ssl was required", "does not support ssl"),
        "the server does not accept TLS connections: enable it on the server (ssl = on,"
        " ssl_cert_file, ssl_key_file) or change sslmode in postgres.dsn",
    ),
    (
        ("certificate", "sslcert", "sslkey"),
        "check sslmode, sslrootcert, sslcert and sslkey in postgres.dsn",
    ),
)


def _connection_fix(message: str) -> str | None:
    """The fix of a connection failure a person must fix, from its (lower-case) text."""
    for markers, fix in _CONNECTION_FIXES:
        if any(marker in message for marker in markers):
            return fix
    if "does not exist" in message:
        if 'database "' in message:
            return "the database in postgres.dsn does not exist: check its name (dbname)"
        if 'role "' in message:
            return "the user in postgres.dsn does not exist: create it or fix the DSN"
    return None


def source_error(action: str, exc: psycopg.Error, *, hint: str | None = None) -> SourceError:
    """Our error for a failed PostgreSQL call while doing ``action`` ("connecting to
    PostgreSQL", "creating replication slot 'x'"): retryable, or with its fix."""
    # psycopg messages carry host, port and user at most, never the password.
    text = str(exc).strip()
    message = f"{action} failed: {text}"
    if isinstance(exc, psycopg.ProgrammingError) and "connection info string" in text:
        return SourceError(
            f"{message}. postgres.dsn is not a connection string: write it as"
            " postgresql://user:${PASSWORD}@host:5432/dbname or as key=value pairs",
            retryable=False,
        )
    sqlstate = exc.sqlstate
    if sqlstate is None:
        fix = _connection_fix(text.lower())
        if fix is not None:
            return SourceError(f"{message}. Fix: {fix}", retryable=False)
        return SourceError(message if hint is None else f"{message}. {hint}", retryable=True)
    retryable = sqlstate.startswith(_RETRYABLE_CLASSES) or sqlstate in _RETRYABLE_CODES
    if hint is not None:
        message = f"{message}. {hint}"
    elif sqlstate == "42501":
        message = (
            f"{message}. Fix: grant the role what it lacks (e.g. GRANT SELECT ON <table>"
            " TO <user> for every published table)"
        )
    return SourceError(message, retryable=retryable)


def target_error(action: str, exc: psycopg.Error, *, retry: bool | None = None) -> TargetError:
    """Our error for a failed call on a replay's target database: retryable when the
    connection or the server failed (the same classes as for the source), otherwise with
    the statement that was refused (``retry=False`` forces it for DDL and data)."""
    mapped = source_error(action, exc)
    retryable = mapped.retryable if retry is None else (retry and mapped.retryable)
    if exc.sqlstate is not None and exc.sqlstate.startswith("08"):
        retryable = True  # the connection broke mid-statement: the batch rolls back
    text = str(mapped).replace("postgres.dsn", "--target-dsn")
    return TargetError(text, retryable=retryable)
