"""TLS to PostgreSQL (sslmode=verify-full) and SASL_SSL to Kafka, with a CA this test makes.

A PostgreSQL of its own with ``ssl = on`` and a pg_hba.conf that refuses every connection
without TLS, so a connection of the daemon that forgot the DSN's TLS settings (a snapshot
worker, the catalog connection) fails instead of passing unnoticed; a Kafka broker of its
own with a SASL_SSL listener (SASL/PLAIN, the password read from a file).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc.testing.kafka import KafkaServer, SaslSslListener, start_kafka
from cdc.testing.postgres import PostgresServer, start_postgres
from cdc.testing.tls import LocalPki, make_test_pki
from tests.integration.helpers import (
    Daemon,
    at_least,
    connector_config,
    consume,
    scratch_database,
    write_config,
)

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id bigint PRIMARY KEY, name text);"
# Sent nowhere (the test server trusts 127.0.0.1), but held by the daemon's DSN: it must
# never appear in a log line.
PG_PASSWORD = "pg-secret-7c1e9b"
KAFKA_USER = "cdc"
KAFKA_PASSWORD = "kafka-secret-52d0a4"

# Local connections and TLS over TCP only: "hostnossl ... reject" refuses the rest.
HBA = """\
local all all trust
hostssl all all 127.0.0.1/32 trust
hostssl replication all 127.0.0.1/32 trust
hostnossl all all 127.0.0.1/32 reject
hostnossl replication all 127.0.0.1/32 reject
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalPki, LocalPki]:
    """The servers' CA (with their certificate), and another CA that signed nothing."""
    base = tmp_path_factory.mktemp("pki")
    return make_test_pki(base / "ca"), make_test_pki(base / "other", name="unrelated CA")


@pytest.fixture(scope="module")
def tls_postgres(
    pki: tuple[LocalPki, LocalPki], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PostgresServer]:
    base = tmp_path_factory.mktemp("pg-tls")
    # Inside the server's folder, so start_postgres hands the key over to the server's
    # OS user (PostgreSQL refuses a key file others can read).
    tls = base / "tls"
    tls.mkdir()
    cert, key = tls / "server.pem", tls / "server.key"
    cert.write_bytes(pki[0].server_cert.read_bytes())
    key.write_bytes(pki[0].server_key.read_bytes())
    key.chmod(0o600)
    hba = tls / "pg_hba.conf"
    hba.write_text(HBA, encoding="utf-8")
    server = start_postgres(
        base,
        settings={
            "ssl": "on",
            "ssl_cert_file": str(cert),
            "ssl_key_file": str(key),
            "hba_file": str(hba),
        },
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sasl_kafka(
    pki: tuple[LocalPki, LocalPki], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaServer]:
    listener = SaslSslListener(
        keystore=pki[0].keystore,
        keystore_password=pki[0].keystore_password,
        users={KAFKA_USER: KAFKA_PASSWORD},
    )
    server = start_kafka(tmp_path_factory.mktemp("kafka-sasl"), sasl_ssl=listener)
    try:
        yield server
    finally:
        server.stop()


def _tls_dsn(server: PostgresServer, dbname: str, ca: Path) -> str:
    return (
        f"host=127.0.0.1 port={server.port} dbname={dbname} user=postgres"
        f" password={PG_PASSWORD} sslmode=verify-full sslrootcert={ca}"
    )


def _assert_streams_over_tls(
    server: PostgresServer, name: str, dsn: str, daemon: Daemon, read_bootstrap: str
) -> None:
    """The snapshot row and a streamed row arrive; every backend of the daemon is TLS."""
    daemon.wait_for_log("streaming_started", timeout=120)
    with psycopg.connect(server.dsn(dbname=name), autocommit=True) as conn:
        conn.execute("INSERT INTO items VALUES (2, 'streamed')")
        backends = conn.execute(
            "SELECT a.application_name, s.ssl, s.version FROM pg_stat_activity a"
            " JOIN pg_stat_ssl s ON s.pid = a.pid"
            " WHERE a.application_name = %s OR a.application_name LIKE %s",
            (f"cdc:{name}", f"cdc:{name}:%"),
        ).fetchall()
    events = consume(read_bootstrap, f"{name}.public.items", until=at_least(2), timeout=90)
    # Keys 1 and 2 may sit on different partitions: only per-key order is defined.
    assert sorted((e.key["id"], e.value["op"]) for e in events) == [(1, "r"), (2, "c")]
    names = {application for application, _, _ in backends}
    # The replication connection and the catalog connection are open while streaming.
    assert {f"cdc:{name}", f"cdc:{name}:setup"} <= names
    assert all(ssl for _, ssl, _ in backends), backends
    # The snapshot workers are gone by now: pg_hba.conf refused them anything but TLS,
    # and the snapshot row arrived.


def test_a_connector_streams_over_verified_tls_on_every_connection(
    tls_postgres: PostgresServer,
    kafka_server: Any,
    pki: tuple[LocalPki, LocalPki],
    tmp_path: Path,
) -> None:
    with scratch_database(tls_postgres, "tls", SCHEMA) as (name, _):
        with psycopg.connect(tls_postgres.dsn(dbname=name), autocommit=True) as conn:
            conn.execute("INSERT INTO items VALUES (1, 'snapshot')")
        dsn = _tls_dsn(tls_postgres, name, pki[0].ca_cert)
        config, connectors = write_config(
            tmp_path, kafka_server.bootstrap_servers, [connector_config(name, dsn, "public.items")]
        )
        daemon = Daemon.start(config, connectors, tmp_path / "d.log")
        try:
            _assert_streams_over_tls(
                tls_postgres, name, dsn, daemon, kafka_server.bootstrap_servers
            )
        finally:
            daemon.stop_quietly()
        assert PG_PASSWORD not in (tmp_path / "d.log").read_text()


def test_the_server_refuses_connections_without_tls(tls_postgres: PostgresServer) -> None:
    """What makes the test above prove every connection used TLS."""
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(f"host=127.0.0.1 port={tls_postgres.port} user=postgres sslmode=disable")


def test_a_wrong_ca_stops_the_connector_with_the_fix_and_is_not_retried(
    tls_postgres: PostgresServer,
    kafka_server: Any,
    pki: tuple[LocalPki, LocalPki],
    tmp_path: Path,
) -> None:
    with scratch_database(tls_postgres, "tlsca", SCHEMA) as (name, _):
        dsn = _tls_dsn(tls_postgres, name, pki[1].ca_cert)
        config, connectors = write_config(
            tmp_path, kafka_server.bootstrap_servers, [connector_config(name, dsn, "public.items")]
        )
        daemon = Daemon.start(config, connectors, tmp_path / "d.log")
        failed = daemon.failure()
        assert "certificate verify failed" in failed["error"]
        assert "sslrootcert" in failed["error"]
        assert "sslmode=verify-full" in failed["error"]
        events = [e.get("event") for e in daemon.log_lines()]
        assert "connector_restarting" not in events
        assert "connector_crashed" not in events
        assert PG_PASSWORD not in (tmp_path / "d.log").read_text()


def test_a_connector_streams_to_kafka_over_sasl_ssl_with_the_password_from_a_file(
    tls_postgres: PostgresServer,
    sasl_kafka: KafkaServer,
    pki: tuple[LocalPki, LocalPki],
    tmp_path: Path,
) -> None:
    secret = tmp_path / "kafka_password"
    secret.write_text(KAFKA_PASSWORD + "\n", encoding="utf-8")
    properties = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": KAFKA_USER,
        "sasl.password": f"${{file:{secret}}}",
        "ssl.ca.location": str(pki[0].ca_cert),
    }
    with scratch_database(tls_postgres, "sasl", SCHEMA) as (name, _):
        with psycopg.connect(tls_postgres.dsn(dbname=name), autocommit=True) as conn:
            conn.execute("INSERT INTO items VALUES (1, 'snapshot')")
        dsn = _tls_dsn(tls_postgres, name, pki[0].ca_cert)
        config, connectors = write_config(
            tmp_path,
            sasl_kafka.sasl_ssl_bootstrap_servers,
            [connector_config(name, dsn, "public.items")],
            kafka_properties=properties,
        )
        daemon = Daemon.start(config, connectors, tmp_path / "d.log")
        try:
            # Read back through the broker's PLAINTEXT listener (the test's own client).
            _assert_streams_over_tls(tls_postgres, name, dsn, daemon, sasl_kafka.bootstrap_servers)
        finally:
            daemon.stop_quietly()
        log = (tmp_path / "d.log").read_text()
        assert KAFKA_PASSWORD not in log
        assert PG_PASSWORD not in log
