"""libpq's TLS connection failures become non-retryable errors that say what to fix."""

from __future__ import annotations

import psycopg
import pytest

from cdc.postgres.errors import source_error

_AT = 'connection failed: connection to server at "10.0.0.5", port 5432 failed: '


@pytest.mark.parametrize(
    ("libpq", "fix"),
    [
        ("SSL error: certificate verify failed", "set sslrootcert in postgres.dsn"),
        (
            'server certificate for "db.internal" does not match host name "10.0.0.5"',
            "sslmode=verify-full requires",
        ),
        (
            'root certificate file "/run/secrets/ca.pem" does not exist\nEither provide the file',
            "the sslrootcert file in postgres.dsn does not exist",
        ),
        ("server does not support SSL, but SSL was required", "enable it on the server"),
        ('could not open certificate file "/x/client.crt"', "check sslmode, sslrootcert"),
    ],
)
def test_a_tls_failure_is_not_retried_and_names_the_fix(libpq: str, fix: str) -> None:
    error = source_error("connecting to PostgreSQL", psycopg.OperationalError(_AT + libpq))
    assert not error.retryable
    assert fix in str(error)


def test_a_connection_lost_under_tls_is_still_retried() -> None:
    """An SSL error that is a broken connection, not a setting, heals by itself."""
    error = source_error(
        "reading the replication stream",
        psycopg.OperationalError("consuming input failed: SSL error: unexpected eof while reading"),
    )
    assert error.retryable
