"""Unit tests of cdc.cli with click's CliRunner: output, exit codes, configuration errors."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

from cdc import __version__
from cdc.cli import EXIT_CONFIG_ERROR, cli, render_fleet
from cdc.config import ConnectorConfig, DaemonConfig

DAEMON = "kafka:\n  bootstrap_servers: k:9092\n"
INVENTORY = (
    "name: inventory\n"
    "postgres:\n  dsn: 'postgresql://cdc:${PG_PASSWORD}@db/inventory'\n"
    "tables: [public.customers, orders]\n"
)
BILLING = "name: billing\npostgres:\n  dsn: 'host=db password=x'\n"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "cdc.yaml").write_text(DAEMON, encoding="utf-8")
    (tmp_path / "connectors").mkdir()
    (tmp_path / "connectors" / "inventory.yaml").write_text(INVENTORY, encoding="utf-8")
    (tmp_path / "connectors" / "billing.yml").write_text(BILLING, encoding="utf-8")
    return tmp_path


def invoke(layout: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run the CLI with the layout's files, the way an operator would."""
    full_env = {"PG_PASSWORD": "hunter2", "CDC_CONFIG": None, "CDC_CONNECTORS": None}
    full_env.update(env or {})
    command = list(args)
    if command and command[0] in {"validate", "run"}:
        command += [
            "--config",
            str(layout / "config" / "cdc.yaml"),
            "--connectors",
            str(layout / "connectors"),
        ]
    return CliRunner().invoke(cli, command, env=full_env)


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"cdc {__version__}\n")


def test_validate_prints_one_line_per_connector(layout: Path) -> None:
    result = invoke(layout, "validate")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "billing: slot=cdc_billing publication=cdc_billing tables=all tables "
        "retention=billing.{schema}.{table} compacted=billing.{schema}.{table}.latest",
        "inventory: slot=cdc_inventory publication=cdc_inventory "
        "tables=public.customers,public.orders "
        "retention=inventory.{schema}.{table} compacted=inventory.{schema}.{table}.latest",
    ]
    assert "hunter2" not in result.output


def test_validate_marks_disabled_connectors(layout: Path) -> None:
    (layout / "connectors" / "billing.yml").write_text(BILLING + "enabled: false\n")
    result = invoke(layout, "validate")
    assert result.stdout.startswith("billing (disabled): ")


def test_validate_reads_paths_from_environment(layout: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["validate"],
        env={
            "CDC_CONFIG": str(layout / "config" / "cdc.yaml"),
            "CDC_CONNECTORS": str(layout / "connectors"),
            "PG_PASSWORD": "x",
        },
    )
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2


def test_validate_defaults_to_config_and_connectors_in_the_working_dir(
    layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(layout)
    result = CliRunner().invoke(
        cli, ["validate"], env={"CDC_CONFIG": None, "CDC_CONNECTORS": None, "PG_PASSWORD": "x"}
    )
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2


def test_validate_reports_a_missing_default_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["validate"], env={"CDC_CONFIG": None, "CDC_CONNECTORS": None})
    assert_config_error(result, "config/cdc.yaml: file not found")


def assert_config_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == EXIT_CONFIG_ERROR
    assert result.stdout == ""
    assert result.stderr.startswith("cdc: configuration error: ")
    for fragment in fragments:
        assert fragment in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_missing_key(layout: Path) -> None:
    (layout / "config" / "cdc.yaml").write_text("kafka: {}\n")
    assert_config_error(
        invoke(layout, "validate"),
        "cdc.yaml: kafka.bootstrap_servers: required key is missing",
    )


def test_validate_bad_type(layout: Path) -> None:
    (layout / "config" / "cdc.yaml").write_text(DAEMON + "topics: {partitions: six}\n")
    assert_config_error(invoke(layout, "validate"), "topics.partitions:", "valid integer")


def test_validate_typo_key(layout: Path) -> None:
    (layout / "connectors" / "billing.yml").write_text(BILLING + "tabels: [a]\n")
    assert_config_error(
        invoke(layout, "validate"), "billing.yml: tabels: unknown key; did you mean 'tables'?"
    )


def test_validate_missing_env_var(layout: Path) -> None:
    result = invoke(layout, "validate", env={"PG_PASSWORD": None})  # type: ignore[dict-item]
    assert_config_error(
        result, "inventory.yaml: postgres.dsn: environment variable PG_PASSWORD is not set"
    )


def test_validate_duplicate_names(layout: Path) -> None:
    (layout / "connectors" / "zz.yaml").write_text(BILLING + "slot: other\n")
    assert_config_error(
        invoke(layout, "validate"),
        "zz.yaml: name: connector name 'billing' is also used by",
        "billing.yml",
    )


def test_validate_duplicate_slots(layout: Path) -> None:
    (layout / "connectors" / "zz.yaml").write_text(
        "name: other\npostgres: {dsn: x}\nslot: cdc_billing\n"
    )
    assert_config_error(invoke(layout, "validate"), "zz.yaml: slot: slot 'cdc_billing'")


def test_validate_forbidden_kafka_property(layout: Path) -> None:
    (layout / "config" / "cdc.yaml").write_text(
        "kafka:\n  bootstrap_servers: k\n  properties:\n    enable.idempotence: false\n"
    )
    assert_config_error(
        invoke(layout, "validate"),
        "kafka.properties.enable.idempotence:",
        "cannot be set in kafka.properties",
    )


def test_validate_missing_connectors_folder(tmp_path: Path, layout: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "validate",
            "--config",
            str(layout / "config" / "cdc.yaml"),
            "--connectors",
            str(tmp_path / "nowhere"),
        ],
    )
    assert_config_error(result, "connectors folder not found")


def test_run_config_error_exits_2_without_starting(layout: Path) -> None:
    (layout / "config" / "cdc.yaml").write_text("kafka: {bootstrap_servers: k, colour: red}\n")
    assert_config_error(invoke(layout, "run"), "kafka.colour: unknown key")


def test_run_with_every_connector_disabled_exits_2(layout: Path) -> None:
    for path in (layout / "connectors").iterdir():
        path.write_text(path.read_text() + "enabled: false\n")
    assert_config_error(invoke(layout, "run"), "every connector has enabled: false")


def test_run_rejects_unknown_log_level(layout: Path) -> None:
    result = invoke(layout, "run", "--log-level", "loud")
    assert result.exit_code == 2
    assert "Invalid value for '--log-level'" in result.stderr


def test_run_hands_enabled_connectors_to_the_daemon(
    layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon is replaced by a stub: this tests the hand-over, not the daemon."""
    (layout / "connectors" / "billing.yml").write_text(BILLING + "enabled: false\n")
    calls: list[tuple[DaemonConfig, list[ConnectorConfig]]] = []

    def run_daemon(daemon: DaemonConfig, connectors: list[ConnectorConfig]) -> int:
        calls.append((daemon, connectors))
        return 3

    stub = types.ModuleType("cdc.daemon")
    stub.run_daemon = run_daemon  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cdc.daemon", stub)
    result = invoke(layout, "run", "--log-format", "json", "--log-level", "ERROR")
    assert result.exit_code == 3, result.output
    ((daemon, connectors),) = calls
    assert daemon.kafka.bootstrap_servers == "k:9092"
    assert [c.name for c in connectors] == ["inventory"]


def test_fleet_status_lists_each_instance_with_its_connectors_and_a_foreign_roster() -> None:
    lines, owned = render_fleet(
        {
            "group": "g",
            "consumer_group": "cdc-fleet-g",
            "state": "stable",
            "roster_digest": "abc",
            "members": [
                {"instance_id": "b", "host": "/10.0.0.2", "roster_digest": "abc",
                 "connectors": ["orders"]},
                {"instance_id": "a", "host": "/10.0.0.1", "roster_digest": "abc",
                 "connectors": ["billing", "inventory"]},
                {"instance_id": "c", "host": "/10.0.0.3", "roster_digest": "zzz",
                 "connectors": []},
            ],
        }
    )  # fmt: skip
    assert lines == [
        "fleet g (consumer group cdc-fleet-g, stable), roster abc",
        "  instance a (/10.0.0.1): billing, inventory",
        "  instance b (/10.0.0.2): orders",
        "  instance c (/10.0.0.3): nothing (standby)  (other connector files: roster zzz)",
    ]
    assert owned == {"billing", "inventory", "orders"}


def test_fleet_status_needs_a_fleet_in_the_config(tmp_path: Path) -> None:
    config = tmp_path / "cdc.yaml"
    config.write_text("kafka:\n  bootstrap_servers: k:9092\n")
    connectors = tmp_path / "connectors"
    connectors.mkdir()
    (connectors / "a.yaml").write_text("name: a\npostgres:\n  dsn: postgresql://u@h/d\n")
    result = CliRunner().invoke(
        cli, ["status", "--fleet", "--config", str(config), "--connectors", str(connectors)]
    )
    assert result.exit_code == 2
    assert "--fleet needs fleet.group" in result.output
