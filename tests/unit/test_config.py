"""Unit tests of cdc.config: YAML text in, frozen models or a ConfigError with file and key out."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest

from cdc.config import (
    ConnectorConfig,
    DaemonConfig,
    TopicsConfig,
    load_connector_config_text,
    load_daemon_config_text,
    load_files,
)
from cdc.errors import ConfigError
from cdc.kafka.client import PRODUCER_REQUIRED

REPO = Path(__file__).resolve().parents[2]
MINIMAL_DAEMON = "kafka:\n  bootstrap_servers: k:9092\n"
MINIMAL_CONNECTOR = "name: inventory\npostgres:\n  dsn: postgresql://cdc:hunter2@db/inventory\n"


def daemon(text: str = MINIMAL_DAEMON, env: dict[str, str] | None = None) -> DaemonConfig:
    return load_daemon_config_text(text, source="cdc.yaml", env=env or {})


def connector(text: str = MINIMAL_CONNECTOR, env: dict[str, str] | None = None) -> ConnectorConfig:
    return load_connector_config_text(text, source="inventory.yaml", env=env or {})


def daemon_error(text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        daemon(text, env)
    return info.value


def connector_error(text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        connector(text, env)
    return info.value


# --------------------------------------------------------------------------- daemon file


def test_minimal_daemon_config_gets_documented_defaults() -> None:
    config = daemon()
    assert config.kafka.bootstrap_servers == "k:9092"
    assert config.kafka.properties == {}
    assert config.topics == TopicsConfig(
        retention="{connector}.{schema}.{table}",
        compacted="{connector}.{schema}.{table}.latest",
        partitions=6,
        replication_factor=3,
        retention_configs={},
        compacted_configs={},
    )
    assert (config.log.level, config.log.format) == ("info", "auto")
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9187)


def test_models_are_frozen() -> None:
    config = daemon()
    with pytest.raises(pydantic.ValidationError):
        config.kafka.bootstrap_servers = "other"


def test_missing_required_key_names_it() -> None:
    error = daemon_error("kafka: {}\n")
    assert (error.source, error.key) == ("cdc.yaml", "kafka.bootstrap_servers")
    assert "required key is missing" in str(error)


def test_misspelt_key_is_an_error_with_a_suggestion() -> None:
    error = daemon_error(MINIMAL_DAEMON + "topics:\n  partitons: 3\n")
    assert error.key == "topics.partitons"
    assert "did you mean 'partitions'" in str(error)


def test_wrong_type_says_what_is_expected() -> None:
    error = daemon_error(MINIMAL_DAEMON + "topics:\n  partitions: many\n")
    assert error.key == "topics.partitions"
    assert "valid integer" in str(error)


def test_section_that_is_not_a_mapping_is_an_error() -> None:
    error = daemon_error("kafka: [a, b]\n")
    assert error.key == "kafka"
    assert "expected a mapping" in str(error)


@pytest.mark.parametrize("value", ["0", "-2"])
def test_partitions_and_replication_factor_bounds(value: str) -> None:
    assert daemon_error(MINIMAL_DAEMON + f"topics: {{partitions: {value}}}\n").key == (
        "topics.partitions"
    )
    assert daemon_error(MINIMAL_DAEMON + f"topics: {{replication_factor: {value}}}\n").key == (
        "topics.replication_factor"
    )


def test_replication_factor_minus_one_means_broker_default() -> None:
    assert (
        daemon(MINIMAL_DAEMON + "topics: {replication_factor: -1}\n").topics.replication_factor
        == -1
    )


def test_log_level_is_case_insensitive_and_checked() -> None:
    assert daemon(MINIMAL_DAEMON + "log: {level: WARNING}\n").log.level == "warning"
    assert daemon_error(MINIMAL_DAEMON + "log: {level: verbose}\n").key == "log.level"


def test_metrics_port_null_disables_the_endpoint() -> None:
    assert daemon(MINIMAL_DAEMON + "metrics: {port: null}\n").metrics.port is None


def test_empty_file_is_an_error() -> None:
    assert "file is empty" in str(daemon_error(""))


def test_top_level_list_is_an_error() -> None:
    assert "top level" in str(daemon_error("- kafka\n"))


def test_duplicate_yaml_key_is_an_error() -> None:
    error = daemon_error(MINIMAL_DAEMON + "kafka:\n  bootstrap_servers: other\n")
    assert "duplicate key 'kafka'" in str(error)


def test_invalid_yaml_reports_position_without_quoting_the_line() -> None:
    error = daemon_error("kafka:\n  bootstrap_servers: 'pw-s3cret\n")
    assert "invalid YAML at line" in str(error)
    assert "s3cret" not in str(error)


# --------------------------------------------------------------------------- kafka properties


def test_pass_through_properties_keep_their_types() -> None:
    config = daemon(
        "kafka:\n  bootstrap_servers: k\n  properties:\n"
        "    security.protocol: SASL_SSL\n    linger.ms: 20\n"
        "    enable.ssl.certificate.verification: false\n"
    )
    assert config.kafka.properties == {
        "security.protocol": "SASL_SSL",
        "linger.ms": 20,
        "enable.ssl.certificate.verification": False,
    }
    assert config.kafka.librdkafka_config() == {
        "bootstrap.servers": "k",
        "security.protocol": "SASL_SSL",
        "linger.ms": "20",
        "enable.ssl.certificate.verification": "false",
    }


@pytest.mark.parametrize(
    "name",
    # Every property the sink sets for correctness: the two lists must not drift apart.
    sorted({"enable.idempotence", "acks", "partitioner", "max.in.flight.requests.per.connection"}
           | set(PRODUCER_REQUIRED)),
)  # fmt: skip
def test_properties_owned_by_cdc_are_rejected_with_the_reason(name: str) -> None:
    error = daemon_error(f"kafka:\n  bootstrap_servers: k\n  properties:\n    {name}: 1\n")
    assert error.key == f"kafka.properties.{name}"
    assert "cannot be set in kafka.properties" in str(error)
    assert "remove it" in str(error)


def test_property_value_must_be_a_scalar() -> None:
    error = daemon_error("kafka:\n  bootstrap_servers: k\n  properties:\n    linger.ms: [1]\n")
    assert error.key == "kafka.properties.linger.ms"
    assert "string, number or boolean" in str(error)


def test_secret_properties_are_masked_in_repr() -> None:
    config = daemon("kafka:\n  bootstrap_servers: k\n  properties:\n    sasl.password: hunter2\n")
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config.kafka)
    assert config.kafka.properties["sasl.password"] == "hunter2"


# --------------------------------------------------------------------------- topics


def test_topic_templates_render_names() -> None:
    topics = daemon().topics
    assert topics.retention_topic("inv", "db", "public", "orders") == "inv.public.orders"
    assert topics.compacted_topic("inv", "db", "public", "orders") == "inv.public.orders.latest"


def test_database_placeholder_is_available() -> None:
    topics = daemon(MINIMAL_DAEMON + "topics: {retention: '{database}.{table}'}\n").topics
    assert topics.retention_topic("inv", "shop", "public", "orders") == "shop.orders"


def test_characters_kafka_refuses_become_underscores() -> None:
    topics = daemon().topics
    assert topics.retention_topic("inv", "db", "public", "order lines") == "inv.public.order_lines"


def test_overlong_topic_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        daemon().topics.retention_topic("inv", "db", "public", "t" * 300)
    assert info.value.key == "topics.retention"


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{connector}.{tabel}", "unknown placeholder {tabel}"),
        ("{0}.{table}", "unknown placeholder {0}"),
        ("{table!r}", "conversion or format spec"),
        ("{table", "not a valid topic name template"),
        ("cdc/{table}", "Kafka topic names allow only"),
    ],
)
def test_bad_topic_template_is_rejected_at_load_time(template: str, fragment: str) -> None:
    error = daemon_error(MINIMAL_DAEMON + f"topics: {{retention: '{template}'}}\n")
    assert error.key == "topics.retention"
    assert fragment in str(error)


def test_equal_retention_and_compacted_templates_are_rejected() -> None:
    error = daemon_error(MINIMAL_DAEMON + "topics: {retention: '{table}', compacted: '{table}'}\n")
    assert error.key == "topics"
    assert "must name different topics" in str(error)


def test_topic_configs_are_stringified() -> None:
    topics = daemon(
        MINIMAL_DAEMON + "topics:\n  retention_configs: {min.insync.replicas: 2, x: true}\n"
    ).topics
    assert topics.retention_configs == {"min.insync.replicas": "2", "x": "true"}


@pytest.mark.parametrize(
    ("section", "name"),
    [
        ("retention_configs", "cleanup.policy"),
        ("compacted_configs", "cleanup.policy"),
    ],
)
def test_topic_configs_owned_by_cdc_are_rejected(section: str, name: str) -> None:
    error = daemon_error(MINIMAL_DAEMON + f"topics:\n  {section}: {{{name}: x}}\n")
    assert error.key == f"topics.{section}.{name}"


def test_retention_topic_may_choose_a_finite_retention() -> None:
    """retention.ms=-1 is the default, not a rule: a user may keep 30 days only."""
    text = MINIMAL_DAEMON + "topics:\n  retention_configs: {retention.ms: 2592000000}\n"
    config = load_daemon_config_text(text, source="cdc.yaml", env={})
    assert config.topics.retention_configs == {"retention.ms": "2592000000"}


# --------------------------------------------------------------------------- environment


def test_env_variables_are_interpolated_after_yaml_parsing() -> None:
    secret = "p@ss: #'\"{x}"  # YAML-special characters must arrive verbatim
    config = connector(
        "name: inventory\npostgres:\n  dsn: 'postgresql://cdc:${PW}@db/inventory'\n",
        env={"PW": secret},
    )
    assert config.postgres.dsn.get_secret_value() == f"postgresql://cdc:{secret}@db/inventory"


def test_env_default_applies_when_unset_or_empty() -> None:
    text = "kafka:\n  bootstrap_servers: '${B:-fallback:9092}'\n"
    assert daemon(text).kafka.bootstrap_servers == "fallback:9092"
    assert daemon(text, env={"B": ""}).kafka.bootstrap_servers == "fallback:9092"
    assert daemon(text, env={"B": "set:1"}).kafka.bootstrap_servers == "set:1"


def test_env_integers_are_coerced() -> None:
    text = MINIMAL_DAEMON + "topics: {replication_factor: '${RF:-1}', partitions: '${P}'}\n"
    topics = daemon(text, env={"P": "12"}).topics
    assert (topics.replication_factor, topics.partitions) == (1, 12)


def test_double_dollar_escapes_a_literal_reference() -> None:
    text = "kafka:\n  bootstrap_servers: 'a$${B}b'\n"
    assert daemon(text, env={"B": "no"}).kafka.bootstrap_servers == "a${B}b"


def test_missing_env_variable_names_variable_file_and_key() -> None:
    error = connector_error(
        "name: inventory\npostgres:\n  dsn: 'postgresql://cdc:${INVENTORY_PG_PASSWORD}@db/x'\n"
    )
    assert (error.source, error.key) == ("inventory.yaml", "postgres.dsn")
    assert "INVENTORY_PG_PASSWORD is not set" in str(error)


def test_env_reference_in_list_reports_index() -> None:
    error = connector_error(MINIMAL_CONNECTOR + "tables: [a, '${T}']\n")
    assert error.key == "tables[1]"


def test_file_references_read_a_secret_file_without_its_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "pg_password"
    secret.write_text("s3cr#t: {x}\n", encoding="utf-8")  # as `echo` and kubectl leave it
    config = connector(
        f"name: inventory\npostgres:\n  dsn: 'postgresql://cdc:${{file:{secret}}}@db/x'\n"
    )
    assert config.postgres.dsn.get_secret_value() == "postgresql://cdc:s3cr#t: {x}@db/x"


def test_a_missing_secret_file_names_the_path_and_key_not_a_value(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    error = connector_error(
        f"name: inventory\npostgres:\n  dsn: 'postgresql://cdc:${{file:{missing}}}@db/x'\n"
    )
    assert (error.source, error.key) == ("inventory.yaml", "postgres.dsn")
    assert f"secret file {missing} not found" in str(error)


def test_a_relative_secret_path_is_refused() -> None:
    error = daemon_error("kafka:\n  bootstrap_servers: '${file:secrets/b}'\n")
    assert "${file:/absolute/path}" in str(error)


def test_malformed_env_reference_is_an_error() -> None:
    error = daemon_error("kafka:\n  bootstrap_servers: '${B'\n")
    assert "invalid ${...} reference" in str(error)


def test_keys_are_not_interpolated() -> None:
    error = daemon_error(MINIMAL_DAEMON + "'${X}': 1\n", env={"X": "log"})
    assert error.key == "${X}"


# --------------------------------------------------------------------------- connector file


def test_minimal_connector_gets_documented_defaults() -> None:
    config = connector()
    assert config.name == "inventory"
    assert (config.slot, config.publication) == ("cdc_inventory", "cdc_inventory")
    assert config.tables is None
    assert config.table_names is None
    assert (config.create_slot, config.create_publication, config.enabled) == (True, True, True)
    assert config.status_interval_seconds == 10
    assert config.max_in_flight_events == 5_000
    assert config.delivery == "exactly_once"
    assert (config.exactly_once.commit_interval_ms, config.exactly_once.max_records) == (
        500,
        50_000,
    )
    # Debezium's default hstore.handling.mode: its consumers read hstore unchanged.
    assert config.values.hstore_handling == "json"


def test_delivery_is_exactly_once_or_at_least_once() -> None:
    assert connector(MINIMAL_CONNECTOR + "delivery: at_least_once\n").delivery == "at_least_once"
    error = connector_error(MINIMAL_CONNECTOR + "delivery: maybe\n")
    assert error.key == "delivery"


@pytest.mark.parametrize(
    "table",
    [
        "public.bad_t; DROP TABLE x",
        'public."Orders"',
        "public.o'rders",
        "public.orders -- all",
        "public.a/*b*/",
        " public.orders",
        "public.orders\t",
        "public." + "x" * 64,
    ],
)
def test_what_cannot_be_a_stored_table_name_is_refused_at_validation(table: str) -> None:
    error = connector_error(MINIMAL_CONNECTOR + f"tables: [{json.dumps(table)}]\n")
    assert error.key == "tables[0]"


def test_table_names_with_spaces_and_capitals_are_names() -> None:
    config = connector(MINIMAL_CONNECTOR + "tables: ['My Schema.Order Items']\n")
    assert config.tables == ("My Schema.Order Items",)


def test_default_slot_replaces_characters_postgres_refuses() -> None:
    config = connector("name: Shop-EU.1\npostgres: {dsn: x}\n")
    assert (config.slot, config.publication) == ("cdc_shop_eu_1", "cdc_shop_eu_1")


def test_tables_default_to_public_schema() -> None:
    config = connector(MINIMAL_CONNECTOR + "tables: [sales.orders, customers]\n")
    assert config.tables == ("sales.orders", "public.customers")
    assert config.table_names == [("sales", "orders"), ("public", "customers")]


@pytest.mark.parametrize(
    ("tables", "key"),
    [
        ("[a.b.c]", "tables[0]"),
        ("[x, '.y']", "tables[1]"),
        ("[]", "tables"),
        ("[a, public.a]", "tables"),
    ],
)
def test_bad_tables_are_rejected(tables: str, key: str) -> None:
    assert connector_error(MINIMAL_CONNECTOR + f"tables: {tables}\n").key == key


def test_dsn_is_secret_in_repr_and_errors() -> None:
    config = connector()
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config)
    error = connector_error(
        "name: inventory\npostgres:\n  dsn: 'postgresql://cdc:hunter2@db/x'\n  x: 1\n"
    )
    assert "hunter2" not in str(error)


def test_empty_dsn_is_rejected() -> None:
    assert connector_error("name: x\npostgres: {dsn: ''}\n").key == "postgres.dsn"


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("name: 'has space'", "name"),
        ("slot: Upper", "slot"),
        ("publication: " + "p" * 64, "publication"),
        ("status_interval_seconds: 0", "status_interval_seconds"),
        ("status_interval_seconds: 61", "status_interval_seconds"),
        ("max_in_flight_events: 0", "max_in_flight_events"),
        ("create_slot: maybe", "create_slot"),
        ("slott: cdc_x", "slott"),
    ],
)
def test_invalid_connector_value_names_the_key(line: str, key: str) -> None:
    text = (
        MINIMAL_CONNECTOR.replace("name: inventory\n", "")
        if line.startswith("name")
        else MINIMAL_CONNECTOR
    )
    assert connector_error(text + line + "\n").key == key


def test_overlong_derived_slot_asks_for_an_explicit_one() -> None:
    error = connector_error(f"name: {'n' * 60}\npostgres: {{dsn: x}}\n")
    assert error.key == "slot"
    assert "set it explicitly" in str(error)


def test_effective_topics_apply_connector_overrides() -> None:
    base = daemon(MINIMAL_DAEMON + "topics:\n  retention_configs: {a: '1', b: '1'}\n")
    config = connector(
        MINIMAL_CONNECTOR + "topics:\n  partitions: 12\n  retention_configs: {b: '2'}\n"
    )
    topics = config.effective_topics(base)
    assert topics.partitions == 12
    assert topics.replication_factor == 3
    assert topics.retention_configs == {"a": "1", "b": "2"}
    assert topics.retention == base.topics.retention


def test_effective_topics_without_overrides_are_the_defaults() -> None:
    base = daemon()
    assert connector().effective_topics(base) is base.topics


def test_override_validation_happens_at_load_time() -> None:
    assert (
        connector_error(MINIMAL_CONNECTOR + "topics: {partitions: 0}\n").key == "topics.partitions"
    )


# --------------------------------------------------------------------------- load_files


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_load_files_reads_yaml_and_yml_sorted(tmp_path: Path) -> None:
    config = write(tmp_path / "cdc.yaml", MINIMAL_DAEMON)
    write(tmp_path / "c" / "b.yml", "name: b\npostgres: {dsn: x}\n")
    write(tmp_path / "c" / "a.yaml", "name: a\npostgres: {dsn: x}\n")
    write(tmp_path / "c" / ".#a.yaml", "garbage: [")
    write(tmp_path / "c" / "README.md", "not yaml")
    _, connectors = load_files(config, tmp_path / "c", env={})
    assert [c.name for c in connectors] == ["a", "b"]


def test_load_files_uses_the_given_env(tmp_path: Path) -> None:
    config = write(tmp_path / "cdc.yaml", "kafka: {bootstrap_servers: '${B}'}\n")
    write(tmp_path / "c" / "a.yaml", "name: a\npostgres: {dsn: x}\n")
    daemon_config, _ = load_files(config, tmp_path / "c", env={"B": "b:1"})
    assert daemon_config.kafka.bootstrap_servers == "b:1"


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found") as info:
        load_files(tmp_path / "nope.yaml", tmp_path, env={})
    assert info.value.source == str(tmp_path / "nope.yaml")


def test_missing_connectors_folder(tmp_path: Path) -> None:
    config = write(tmp_path / "cdc.yaml", MINIMAL_DAEMON)
    with pytest.raises(ConfigError, match="connectors folder not found"):
        load_files(config, tmp_path / "missing", env={})


def test_connectors_folder_without_files(tmp_path: Path) -> None:
    config = write(tmp_path / "cdc.yaml", MINIMAL_DAEMON)
    (tmp_path / "c").mkdir()
    with pytest.raises(ConfigError, match="no connector files"):
        load_files(config, tmp_path / "c", env={})


def test_duplicate_connector_names_name_both_files(tmp_path: Path) -> None:
    config = write(tmp_path / "cdc.yaml", MINIMAL_DAEMON)
    first = write(tmp_path / "c" / "a.yaml", "name: x\npostgres: {dsn: x}\nslot: s1\n")
    second = write(tmp_path / "c" / "b.yaml", "name: x\npostgres: {dsn: x}\nslot: s2\n")
    with pytest.raises(ConfigError) as info:
        load_files(config, tmp_path / "c", env={})
    assert (info.value.source, info.value.key) == (str(second), "name")
    assert str(first) in str(info.value)


def test_duplicate_slots_name_both_files(tmp_path: Path) -> None:
    config = write(tmp_path / "cdc.yaml", MINIMAL_DAEMON)
    first = write(tmp_path / "c" / "a.yaml", "name: a\npostgres: {dsn: x}\nslot: same\n")
    second = write(tmp_path / "c" / "b.yaml", "name: b\npostgres: {dsn: x}\nslot: same\n")
    with pytest.raises(ConfigError) as info:
        load_files(config, tmp_path / "c", env={})
    assert (info.value.source, info.value.key) == (str(second), "slot")
    assert str(first) in str(info.value)


def test_merged_topics_are_checked_with_the_connector_file(tmp_path: Path) -> None:
    config = write(tmp_path / "cdc.yaml", MINIMAL_DAEMON)
    bad = write(
        tmp_path / "c" / "a.yaml",
        "name: a\npostgres: {dsn: x}\ntopics: {retention: '{connector}.{schema}.{table}.latest'}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_files(config, tmp_path / "c", env={})
    assert (info.value.source, info.value.key) == (str(bad), "topics")


def test_shipped_config_files_are_valid() -> None:
    daemon_config, connectors = load_files(
        REPO / "config" / "cdc.yaml",
        REPO / "connectors",
        env={"INVENTORY_PG_PASSWORD": "secret"},
    )
    assert daemon_config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert daemon_config.topics.replication_factor == 1
    assert "inventory" in [c.name for c in connectors]


# --------------------------------------------------------------------------- replays


def test_a_declared_replay_reads_its_target_dsn_from_the_environment() -> None:
    cfg = connector(
        MINIMAL_CONNECTOR
        + "replays:\n  - name: svc\n    target_dsn: postgresql://svc:${SVC_PW}@new/db\n"
        + "    map: {orders: svc.orders}\n",
        env={"SVC_PW": "s3cret"},
    )
    (replay,) = cfg.replays
    assert replay.target_dsn.get_secret_value() == "postgresql://svc:s3cret@new/db"
    assert dict(replay.map) == {"public.orders": "svc.orders"}
    assert "s3cret" not in repr(cfg)


def test_a_transactional_replay_needs_transaction_metadata() -> None:
    error = connector_error(
        MINIMAL_CONNECTOR
        + "replays:\n  - {name: svc, target_dsn: 'dbname=x', transactional: true}\n"
    )
    assert "provide_transaction_metadata" in str(error)


def test_replay_names_are_unique_per_connector() -> None:
    error = connector_error(
        MINIMAL_CONNECTOR
        + "replays:\n  - {name: svc, target_dsn: 'dbname=x'}\n"
        + "  - {name: svc, target_dsn: 'dbname=y'}\n"
    )
    assert "used twice" in str(error)
