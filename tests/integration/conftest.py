"""Real PostgreSQL and Kafka for the integration tests, started once per test run.

Local child processes (``cdc.testing``) by default. Where a Docker engine answers and the
optional ``testcontainers`` package is installed, containers are used instead, behind the
same interface (``dsn()``, ``bootstrap_servers``, ``stop()``). ``CDC_TEST_SERVICES=local``
or ``=docker`` forces the choice.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg.rows import TupleRow

from cdc.testing import KafkaService, PostgresService
from cdc.testing.kafka import start_kafka
from cdc.testing.postgres import DEFAULT_SETTINGS, start_postgres

POSTGRES_IMAGE = "postgres:15"
POSTGRES_PASSWORD = "postgres"  # a throwaway container's, never a real one


@dataclass(slots=True)
class DockerPostgres:
    """A testcontainers ``PostgresContainer`` seen through ``PostgresService``."""

    container: Any

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        host = self.container.get_container_host_ip()
        port = self.container.get_exposed_port(5432)
        password = f":{POSTGRES_PASSWORD}" if user == "postgres" else ""
        return f"postgresql://{quote(user, safe='')}{password}@{host}:{port}/{quote(dbname)}"

    def stop(self) -> None:
        self.container.stop()


@dataclass(slots=True)
class DockerKafka:
    """A testcontainers ``KafkaContainer`` seen through ``KafkaService``."""

    container: Any

    @property
    def bootstrap_servers(self) -> str:
        return str(self.container.get_bootstrap_server())

    def stop(self) -> None:
        self.container.stop()


def _use_docker() -> bool:
    """Decide between containers and local processes; see the module docstring."""
    choice = os.environ.get("CDC_TEST_SERVICES", "").strip().lower()
    if choice == "local":
        return False
    if choice not in ("", "docker"):
        raise pytest.UsageError(f"CDC_TEST_SERVICES={choice!r}: use 'local' or 'docker'")
    try:
        importlib.import_module("testcontainers.postgres")
        importlib.import_module("testcontainers.kafka")
        docker = importlib.import_module("docker")
    except ImportError as exc:
        if choice == "docker":
            raise pytest.UsageError(
                "CDC_TEST_SERVICES=docker needs: .venv/bin/pip install testcontainers"
            ) from exc
        return False
    try:
        client = docker.from_env()
        client.ping()
        client.close()
    # docker-py raises its own DockerException, requests' errors or OSError when no
    # engine answers; any of them means "use local processes".
    except Exception as exc:
        if choice == "docker":
            raise pytest.UsageError(f"CDC_TEST_SERVICES=docker but no engine: {exc}") from exc
        return False
    return True


@pytest.fixture(scope="session")
def use_docker() -> bool:
    """Whether this run's services are containers (True) or local processes (False)."""
    return _use_docker()


@pytest.fixture(scope="session")
def postgres_server(
    use_docker: bool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PostgresService]:
    """One PostgreSQL 15 with ``wal_level=logical`` for the whole run."""
    service: PostgresService
    if use_docker:
        module = importlib.import_module("testcontainers.postgres")
        settings = " ".join(
            f"-c {name}={value}"
            for name, value in DEFAULT_SETTINGS.items()
            if name in ("wal_level", "max_replication_slots", "max_wal_senders")
        )
        container = module.PostgresContainer(
            POSTGRES_IMAGE, username="postgres", password=POSTGRES_PASSWORD, dbname="postgres"
        ).with_command(f"postgres {settings}")
        container.start()
        service = DockerPostgres(container)
    else:
        service = start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def kafka_server(
    use_docker: bool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaService]:
    """One single-node Kafka broker for the whole run; topics are not auto-created."""
    service: KafkaService
    if use_docker:
        module = importlib.import_module("testcontainers.kafka")
        container = module.KafkaContainer().with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        container.start()
        service = DockerKafka(container)
    else:
        service = start_kafka(tmp_path_factory.mktemp("kafka"))
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def pg_conn(postgres_server: PostgresService) -> Iterator[psycopg.Connection[TupleRow]]:
    """An autocommit connection to the ``postgres`` database as superuser ``postgres``."""
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        yield conn
