"""``cdc verify`` on the command line, where no service is needed: which connector, which
tables, and the exit status of errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

from cdc.cli import cli

DAEMON = "kafka:\n  bootstrap_servers: 127.0.0.1:1\n"
# Port 1 on loopback: the connection is refused at once.
CONNECTOR = (
    "name: inventory\n"
    "postgres:\n  dsn: 'postgresql://cdc:hunter2@127.0.0.1:1/inventory'\n"
    "tables: [public.orders]\n"
)


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "cdc.yaml").write_text(DAEMON, encoding="utf-8")
    (tmp_path / "connectors").mkdir()
    (tmp_path / "connectors" / "inventory.yaml").write_text(CONNECTOR, encoding="utf-8")
    return tmp_path


def verify(layout: Path, *args: str) -> Result:
    return CliRunner().invoke(
        cli,
        [
            "verify",
            *args,
            "--config",
            str(layout / "config" / "cdc.yaml"),
            "--connectors",
            str(layout / "connectors"),
        ],
    )


def test_an_unknown_connector_exits_2(layout: Path) -> None:
    result = verify(layout, "billing")
    assert result.exit_code == 2
    assert "no connector named 'billing' (there are: inventory)" in result.stderr


def test_an_unreachable_legacy_database_exits_2_without_the_password(layout: Path) -> None:
    result = verify(layout, "inventory")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("cdc verify: the legacy database (postgres.dsn): ")
    assert "hunter2" not in result.stderr


def test_a_negative_max_differences_is_a_usage_error(layout: Path) -> None:
    assert verify(layout, "inventory", "--max-differences", "-1").exit_code == 2
