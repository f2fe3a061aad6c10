"""``cdc check`` on a Kafka cluster with an authorizer (StandardAuthorizer, SASL/PLAIN
over TLS): the right to use the connector's transactional id is judged from the ACLs,
before anything is written; the test's own admin client is a super user on PLAINTEXT."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from cdc.cli import cli
from cdc.testing.kafka import KafkaServer, SaslSslListener, start_kafka
from cdc.testing.tls import LocalPki, make_test_pki
from tests.integration.helpers import scratch_database, write_config

pytestmark = pytest.mark.integration

USER, PASSWORD = "cdc", "acl-secret-1f3a"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPki:
    return make_test_pki(tmp_path_factory.mktemp("pki") / "ca")


@pytest.fixture(scope="module")
def secured_kafka(pki: LocalPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    listener = SaslSslListener(
        keystore=pki.keystore,
        keystore_password=pki.keystore_password,
        users={USER: PASSWORD},
        authorizer=True,
    )
    server = start_kafka(tmp_path_factory.mktemp("kafka-acl"), sasl_ssl=listener)
    admin = AdminClient({"bootstrap.servers": server.bootstrap_servers})
    # What any operator's tooling needs to look: the cluster's configs and ACLs.
    cluster = [
        AclBinding(
            ResourceType.BROKER,
            "kafka-cluster",
            ResourcePatternType.LITERAL,
            f"User:{USER}",
            "*",
            operation,
            AclPermissionType.ALLOW,
        )
        for operation in (AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS)
    ]
    for future in admin.create_acls(cluster).values():
        future.result()
    try:
        yield server
    finally:
        server.stop()


def _check(server: KafkaServer, pki: LocalPki, name: str, dsn: str, tmp_path: Path) -> str:
    properties = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": USER,
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(pki.ca_cert),
    }
    connector = {
        "name": name,
        "postgres": {"dsn": dsn},
        "slot": name,
        "publication": name,
        "tables": ["public.items"],
    }
    config, connectors = write_config(
        tmp_path, server.sasl_ssl_bootstrap_servers, [connector], kafka_properties=properties
    )
    result = CliRunner().invoke(
        cli, ["check", name, "--config", str(config), "--connectors", str(connectors)]
    )
    structlog.reset_defaults()
    return result.output


def test_a_missing_write_acl_on_the_transactional_id_blocks_then_an_acl_allows_it(
    postgres_server: Any, secured_kafka: KafkaServer, pki: LocalPki, tmp_path: Path
) -> None:
    with scratch_database(postgres_server, "acl", "CREATE TABLE items (id int PRIMARY KEY)") as (
        name,
        dsn,
    ):
        before = _check(secured_kafka, pki, name, dsn, tmp_path / "before")
        admin = AdminClient({"bootstrap.servers": secured_kafka.bootstrap_servers})
        grant = AclBinding(
            ResourceType.TRANSACTIONAL_ID,
            "cdc-",
            ResourcePatternType.PREFIXED,
            f"User:{USER}",
            "*",
            AclOperation.WRITE,
            AclPermissionType.ALLOW,
        )
        for future in admin.create_acls([grant]).values():
            future.result()
        after = _check(secured_kafka, pki, name, dsn, tmp_path / "after")
    tid = f"cdc-{name}"
    assert f"BLOCK kafka: User:{USER} may not use transactional id '{tid}'" in before, before
    assert f"--allow-principal User:{USER} --operation Write --operation Describe" in before
    assert f"--transactional-id {tid}" in before
    assert f"OK    kafka: User:{USER} may use transactional id '{tid}' (ACLs)." in after, after
