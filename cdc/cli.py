"""Command line of ``cdc``: validate, check, run, snapshot, replay, verify, status.

Its one job is to parse arguments, load the configuration, and hand over: configuration
errors are printed (file, key, what to do) with exit status 2; everything else belongs to
:mod:`cdc.daemon` (and :mod:`cdc.postgres.signals` for ``snapshot``). This module must not connect
to PostgreSQL or Kafka itself, and must
not configure logging anywhere but here, once, before the daemon starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

import click

from cdc import __version__
from cdc.config import ConnectorConfig, DaemonConfig, load_files
from cdc.errors import ConfigError
from cdc.logging import configure_logging, redact_dsn

__all__ = ["EXIT_CONFIG_ERROR", "cli", "main"]

#: Exit status for a configuration mistake; click uses the same for usage errors.
EXIT_CONFIG_ERROR = 2

_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("auto", "json", "console")

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("config/cdc.yaml"),
    envvar="CDC_CONFIG",
    show_default=True,
    show_envvar=True,
    help="Daemon-wide configuration file.",
)
_connectors_option = click.option(
    "--connectors",
    "connectors_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("connectors"),
    envvar="CDC_CONNECTORS",
    show_default=True,
    show_envvar=True,
    help="Folder of connector files (*.yaml, *.yml), one per database.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cdc", message="%(prog)s %(version)s")
def cli() -> None:
    """Stream PostgreSQL changes (logical replication, pgoutput) into Kafka.

    Each row change goes to a retention topic (every change, kept forever) and a
    compacted topic (latest row per key, tombstone on delete).
    """


def _load(config_path: Path, connectors_dir: Path) -> tuple[DaemonConfig, list[ConnectorConfig]]:
    try:
        return load_files(config_path, connectors_dir)
    except ConfigError as exc:
        # Messages never hold a password by construction; scrub anyway, cheaply.
        click.echo(f"cdc: configuration error: {redact_dsn(str(exc))}", err=True)
        raise SystemExit(EXIT_CONFIG_ERROR) from None


class _KeepUnknown(dict[str, str]):
    """format_map helper: fill only {connector}, leave the per-table placeholders."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _partial_template(template: str, connector: str) -> str:
    # Templates hold no literal braces (config rejects them), so format_map is exact.
    return template.format_map(_KeepUnknown(connector=connector))


def _describe(connector: ConnectorConfig, daemon: DaemonConfig) -> str:
    topics = connector.effective_topics(daemon)
    tables = ",".join(connector.tables) if connector.tables else "all tables"
    state = "" if connector.enabled else " (disabled)"
    return (
        f"{connector.name}{state}: slot={connector.slot} publication={connector.publication} "
        f"tables={tables} retention={_partial_template(topics.retention, connector.name)} "
        f"compacted={_partial_template(topics.compacted, connector.name)}"
    )


@cli.command()
@_config_option
@_connectors_option
def validate(config_path: Path, connectors_dir: Path) -> None:
    """Load and check the configuration without connecting to anything.

    Prints one line per connector; exits 2 on the first configuration error.
    """
    daemon, connectors = _load(config_path, connectors_dir)
    for connector in connectors:
        click.echo(_describe(connector, daemon))


@cli.command()
@click.argument("connector", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print each finding as a JSON line.")
@_config_option
@_connectors_option
def check(connector: str | None, as_json: bool, config_path: Path, connectors_dir: Path) -> None:
    """Preflight: check CONNECTOR (default: every enabled one) before its first write.

    Connects read-only to PostgreSQL and Kafka and prints one line per finding with its
    fix (docs/operations.md, "Preflight: cdc check"). Exits 0 when nothing blocks
    (warnings allowed), 1 when something blocks, 2 on a configuration error.
    """
    daemon, connectors = _load(config_path, connectors_dir)
    if connector is None:
        chosen = [c for c in connectors if c.enabled]
    else:
        chosen = [_find_connector(connectors, connector)]
    configure_logging("warning", daemon.log.format)
    # Imported here so the other commands never load the I/O edges.
    import orjson  # noqa: PLC0415
    import structlog  # noqa: PLC0415

    from cdc.check.findings import Severity, exit_status  # noqa: PLC0415
    from cdc.check.run import check_connector  # noqa: PLC0415

    status = 0
    for target in chosen:
        log = structlog.get_logger("cdc.check").bind(connector=target.name)
        try:
            findings = check_connector(daemon, target, log=log)
        except ConfigError as exc:
            click.echo(f"cdc check: configuration error: {redact_dsn(str(exc))}", err=True)
            raise SystemExit(EXIT_CONFIG_ERROR) from None
        status = max(status, exit_status(findings))
        if as_json:
            for finding in findings:
                document = {"connector": target.name, **finding.to_json()}
                click.echo(redact_dsn(orjson.dumps(document).decode()))
            continue
        if len(chosen) > 1:
            click.echo(f"{target.name}:")
        for finding in findings:
            click.echo(redact_dsn(finding.line()))
        blocks = sum(f.severity is Severity.BLOCK for f in findings)
        warnings = sum(f.severity is Severity.WARN for f in findings)
        verdict = "refused: fix the blocking findings" if blocks else "may start"
        click.echo(f"{target.name}: {blocks} blocking, {warnings} warnings: {verdict}")
    raise SystemExit(status)


@cli.command()
@_config_option
@_connectors_option
@click.option(
    "--log-level",
    type=click.Choice(_LOG_LEVELS, case_sensitive=False),
    default=None,
    help="Override log.level from the configuration file.",
)
@click.option(
    "--log-format",
    type=click.Choice(_LOG_FORMATS, case_sensitive=False),
    default=None,
    help="Override log.format: console, json (one object per line) or auto (console on a TTY).",
)
def run(
    config_path: Path,
    connectors_dir: Path,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Run every enabled connector until stopped (SIGINT/SIGTERM)."""
    daemon, connectors = _load(config_path, connectors_dir)
    enabled = [connector for connector in connectors if connector.enabled]
    if not enabled:
        click.echo(
            f"cdc: configuration error: {connectors_dir}: every connector has enabled: false; "
            "enable at least one",
            err=True,
        )
        raise SystemExit(EXIT_CONFIG_ERROR)

    # click.Choice and LogConfig have both checked the values.
    fmt = cast(Literal["auto", "json", "console"], (log_format or daemon.log.format).lower())
    configure_logging((log_level or daemon.log.level).lower(), fmt)

    # Imported here so `cdc validate` (and its tests) never load the I/O edges.
    from cdc.daemon import run_daemon  # noqa: PLC0415

    try:
        status = run_daemon(daemon, enabled)
    except ConfigError as exc:
        click.echo(f"cdc: configuration error: {redact_dsn(str(exc))}", err=True)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    raise SystemExit(status)


@cli.command()
@click.argument("connector")
@click.option(
    "--table",
    "tables",
    multiple=True,
    help="schema.table to snapshot (repeatable); default: every published table.",
)
@_config_option
@_connectors_option
def snapshot(
    connector: str, tables: tuple[str, ...], config_path: Path, connectors_dir: Path
) -> None:
    """Start an incremental snapshot of CONNECTOR's tables while it keeps streaming.

    The request travels through the WAL, so the running daemon picks it up in order with
    the data; progress shows in its logs (snapshot_started, snapshot_progress).
    """
    _daemon, connectors = _load(config_path, connectors_dir)
    target = _find_connector(connectors, connector)
    wanted = _qualified_tables(tables)
    # Imported here so the other commands never load the I/O edges.
    from cdc.errors import CdcError  # noqa: PLC0415
    from cdc.postgres.signals import request_snapshot  # noqa: PLC0415

    try:
        how = request_snapshot(
            target.postgres.dsn.get_secret_value(),
            wanted,
            signal_table=target.snapshot.signal_table,
        )
    except CdcError as exc:
        click.echo(f"cdc: {redact_dsn(str(exc))}", err=True)
        raise SystemExit(1) from None
    click.echo(
        f"snapshot of {', '.join(wanted) or 'every published table'} requested for"
        f" {connector} ({how}); the daemon logs snapshot_started when it begins"
    )


def _qualified_tables(tables: tuple[str, ...]) -> list[str]:
    """``--table`` values as ``schema.table`` (``orders`` means ``public.orders``)."""
    return [t if "." in t else f"public.{t}" for t in tables]


def _find_connector(connectors: list[ConnectorConfig], name: str) -> ConnectorConfig:
    for connector in connectors:
        if connector.name == name:
            return connector
    names = ", ".join(c.name for c in connectors)
    click.echo(f"cdc: no connector named {name!r} (there are: {names})", err=True)
    raise SystemExit(EXIT_CONFIG_ERROR)


@cli.command()
@click.argument("connector")
@click.option(
    "--target-dsn",
    required=True,
    envvar="CDC_TARGET_DSN",
    show_envvar=True,
    help="The new service's PostgreSQL database (libpq DSN).",
)
@click.option(
    "--table",
    "tables",
    multiple=True,
    help="schema.table to replay (repeatable); default: every table in the log.",
)
@click.option(
    "--map",
    "mappings",
    multiple=True,
    metavar="SCHEMA.TABLE=SCHEMA.TABLE",
    help="Write a legacy table under another name in the target (repeatable).",
)
@click.option(
    "--until",
    default=None,
    metavar="LSN|TIMESTAMP",
    help="Rebuild as of this commit: an LSN (16/B374D848) or an ISO-8601 time.",
)
@click.option("--follow", is_flag=True, help="Keep applying new changes until SIGTERM.")
@click.option(
    "--transactional",
    is_flag=True,
    help="Commit whole source transactions only (needs provide_transaction_metadata).",
)
@click.option(
    "--rebuild",
    is_flag=True,
    help="Drop the tables this connector's replay created in the target, start over.",
)
@click.option(
    "--from-compacted",
    is_flag=True,
    help="Load an empty target from the compacted topics first, then follow.",
)
@click.option(
    "--batch",
    "batch_changes",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="Changes per target transaction.",
)
@click.option("--log-level", type=click.Choice(_LOG_LEVELS, case_sensitive=False), default=None)
@_config_option
@_connectors_option
def replay(  # noqa: PLR0917 - one parameter per option
    connector: str,
    target_dsn: str,
    tables: tuple[str, ...],
    mappings: tuple[str, ...],
    until: str | None,
    follow: bool,
    transactional: bool,
    rebuild: bool,
    from_compacted: bool,
    batch_changes: int,
    log_level: str | None,
    config_path: Path,
    connectors_dir: Path,
) -> None:
    """Apply CONNECTOR's topics to a target PostgreSQL database (docs/replay.md).

    Creates the tables from the log's schema events, applies every change exactly once
    (the offsets are stored in the target with the rows) and exits 0 at the topics' end
    as of the start; --follow keeps going until SIGTERM; --until stops at a past commit.
    Needs nothing but Kafka: the legacy database is not contacted.
    """
    daemon, connectors = _load(config_path, connectors_dir)
    found = _find_connector(connectors, connector)
    mapping: dict[str, str] = {}
    for item in mappings:
        source, eq, target = item.partition("=")
        if not eq or "." not in source or "." not in target:
            click.echo(f"cdc: --map {item!r}: write it as schema.table=schema.table", err=True)
            raise SystemExit(EXIT_CONFIG_ERROR)
        mapping[source] = target
    configure_logging((log_level or daemon.log.level).lower(), daemon.log.format)
    # Imported here so the other commands never load the I/O edges.
    from cdc.replay.run import ReplayRequest, parse_until, run_replay_command  # noqa: PLC0415

    try:
        request = ReplayRequest(
            connector=found,
            daemon=daemon,
            target_dsn=target_dsn,
            tables=tuple(_qualified_tables(tables)) or None,
            mapping=mapping,
            until=None if until is None else parse_until(until),
            follow=follow,
            transactional=transactional,
            rebuild=rebuild,
            from_compacted=from_compacted,
            batch_changes=batch_changes,
        )
    except ConfigError as exc:
        click.echo(f"cdc: {exc}", err=True)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    raise SystemExit(run_replay_command(request))


# --- cdc verify: compare the legacy tables with the compacted topics or a replay target ---


@cli.command()
@click.argument("connector")
@click.option(
    "--table",
    "tables",
    multiple=True,
    help="schema.table to compare (repeatable); default: every table the connector captures.",
)
@click.option(
    "--target-dsn",
    default=None,
    help="Compare with this database (filled by cdc replay) instead of the compacted topics.",
)
@click.option(
    "--max-differences",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Differing keys shown per table (all are counted).",
)
@click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait, per re-check, for the compared side to catch up.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@_config_option
@_connectors_option
def verify(  # noqa: PLR0917 - one parameter per option
    connector: str,
    tables: tuple[str, ...],
    target_dsn: str | None,
    max_differences: int,
    wait_seconds: float,
    as_json: bool,
    config_path: Path,
    connectors_dir: Path,
) -> None:
    """Check that CONNECTOR's legacy tables equal their compacted topics (or --target-dsn).

    Reads the legacy database in short read-only chunks (snapshot.chunk_rows,
    snapshot.max_rows_per_second) and reports a key only if it still differs once the
    compared side has caught up with the legacy reads (docs/verify.md). Exits 0 when
    everything is equal, 1 when something differs, 2 on an error.
    """
    daemon, connectors = _load(config_path, connectors_dir)
    found = _find_connector(connectors, connector)
    configure_logging("warning", daemon.log.format)
    # Imported here so the other commands never load the I/O edges.
    import orjson  # noqa: PLC0415

    from cdc.errors import CdcError  # noqa: PLC0415
    from cdc.verify.run import VerifyOptions, verify_connector  # noqa: PLC0415

    options = VerifyOptions(
        tables=tables,
        target_dsn=target_dsn,
        max_differences=max_differences,
        wait_seconds=wait_seconds,
    )
    try:
        report = verify_connector(daemon, found, options)
    except ConfigError as exc:
        click.echo(f"cdc verify: configuration error: {redact_dsn(str(exc))}", err=True)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
    except CdcError as exc:
        click.echo(f"cdc verify: {redact_dsn(str(exc))}", err=True)
        raise SystemExit(2) from None
    if as_json:
        click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        for line in report.lines():
            click.echo(line)
    raise SystemExit(0 if report.equal else 1)


@cli.command()
@_config_option
@_connectors_option
@click.option(
    "--url",
    default=None,
    help="The daemon's status endpoint; default: from metrics.host/port in --config.",
)
@click.option(
    "--fleet",
    "whole_fleet",
    is_flag=True,
    help="Ask Kafka which instance of the fleet (fleet.group) owns each connector, instead"
    " of asking one daemon.",
)
def status(config_path: Path, connectors_dir: Path, url: str | None, whole_fleet: bool) -> None:
    """Show what a running daemon's connectors are doing (phase, positions, snapshots).

    Exits 0 when every connector is working (starting, snapshotting or streaming), 1
    otherwise or when the daemon does not answer: usable as a probe. With --fleet: every
    instance of the group and the connectors it owns, from the group's own description;
    exits 0 when every enabled connector is owned by an instance, 1 otherwise.
    """
    if whole_fleet:
        _fleet_status(config_path, connectors_dir)
    if url is None:
        daemon = _load_daemon(config_path)
        if daemon.metrics.port is None:
            click.echo("cdc: metrics.port is null in the config: no status endpoint", err=True)
            raise SystemExit(EXIT_CONFIG_ERROR)
        # A daemon listening on every interface is reached on loopback from here.
        wildcard = daemon.metrics.host in ("0.0.0.0", "::")  # noqa: S104 - compared, not bound
        host = "127.0.0.1" if wildcard else daemon.metrics.host
        url = f"http://{host}:{daemon.metrics.port}"
    # Imported here: only this command talks HTTP.
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    import orjson  # noqa: PLC0415

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/status", timeout=10) as response:  # noqa: S310 - the operator's own URL
            document = orjson.loads(response.read())
    except (urllib.error.URLError, OSError) as exc:
        click.echo(f"cdc: no answer from {url}/status: {exc}", err=True)
        raise SystemExit(1) from None
    for line in render_status(document):
        click.echo(line)
    raise SystemExit(0 if document.get("healthy") else 1)


def _fleet_status(config_path: Path, connectors_dir: Path) -> NoReturn:
    """``cdc status --fleet``: the group's members and their connectors; exits."""
    daemon, connectors = _load(config_path, connectors_dir)
    if daemon.fleet is None:
        click.echo("cdc status: --fleet needs fleet.group in the config", err=True)
        raise SystemExit(EXIT_CONFIG_ERROR)
    # Imported here: only this command describes the group.
    from cdc.errors import CdcError  # noqa: PLC0415
    from cdc.fleet import Roster  # noqa: PLC0415
    from cdc.kafka.fleet import describe_fleet  # noqa: PLC0415

    roster = Roster.of(daemon.fleet.group, (c.name for c in connectors if c.enabled))
    try:
        described = describe_fleet(
            daemon.kafka.bootstrap_servers, daemon.kafka.properties, daemon.fleet, roster
        )
    except CdcError as exc:
        click.echo(f"cdc status: {redact_dsn(str(exc))}", err=True)
        raise SystemExit(1) from None
    lines, owned = render_fleet(described)
    for line in lines:
        click.echo(line)
    raise SystemExit(0 if set(roster.connectors) <= owned else 1)


def render_fleet(described: dict[str, Any]) -> tuple[list[str], set[str]]:
    """Readable lines for ``describe_fleet``'s document, and the connectors owned."""
    lines = [
        f"fleet {described['group']} (consumer group {described['consumer_group']},"
        f" {described.get('state') or 'unknown'}), roster {described['roster_digest']}"
    ]
    owned: set[str] = set()
    for member in sorted(described["members"], key=lambda m: str(m["instance_id"])):
        connectors = list(member["connectors"])
        owned.update(connectors)
        mismatch = (
            ""
            if member["roster_digest"] == described["roster_digest"]
            else f"  (other connector files: roster {member['roster_digest']})"
        )
        lines.append(
            f"  instance {member['instance_id']} ({member['host']}): "
            f"{', '.join(connectors) or 'nothing (standby)'}{mismatch}"
        )
    if not described["members"]:
        lines.append("  no instance is in the group")
    return lines, owned


def render_status(document: dict[str, Any]) -> list[str]:
    """Readable lines for a /status document."""
    lines = []
    fleet = document.get("fleet")
    if fleet:
        lines.append(
            f"fleet {fleet.get('group')}: instance {fleet.get('instance_id')} owns"
            f" {', '.join(fleet.get('owned') or []) or 'nothing (standby)'}"
            f"  roster {fleet.get('roster_digest', '-')}"
        )
    for c in document.get("connectors", []):
        events = c.get("events") or {}
        counts = " ".join(f"{op}={events[op]}" for op in ("c", "u", "d", "t") if events.get(op))
        owner = f"  on {c['owner']}" if c.get("owner") else ""
        lines.append(
            f"{c.get('connector')}: {c.get('phase', '?')}{owner}"
            f"  confirmed {c.get('confirmed_lsn', '-')}  lag {c.get('lag_bytes', 0)} B"
            f"  in flight {c.get('in_flight_records', 0)}  events {counts or '0'}"
        )
        if c.get("error"):
            lines.append(f"  error: {c['error']}")
        snapshot = c.get("snapshot")
        if snapshot:
            if snapshot.get("mode") == "incremental":
                lines.append(
                    f"  snapshot ({snapshot.get('kind')}, incremental): table"
                    f" {snapshot.get('table')}, {snapshot.get('rows_done', 0)} rows in"
                    f" {snapshot.get('chunks_done', 0)} chunks, tables left"
                    f" {len(snapshot.get('tables_left') or [])}"
                )
            for table, p in (snapshot.get("tables") or {}).items():
                state = "done" if p.get("done") else "reading"
                lines.append(
                    f"  snapshot {table}: {p.get('rows', 0)} of ~{p.get('estimated_rows', 0)}"
                    f" rows, {state}"
                )
    if not lines:
        lines.append("no connector reported yet")
    return lines


def _load_daemon(config_path: Path) -> DaemonConfig:
    from cdc.config import load_daemon_config_text  # noqa: PLC0415
    from cdc.config.files import read_config_file  # noqa: PLC0415

    try:
        return load_daemon_config_text(
            read_config_file(config_path), source=str(config_path), env=os.environ
        )
    except ConfigError as exc:
        click.echo(f"cdc: configuration error: {redact_dsn(str(exc))}", err=True)
        raise SystemExit(EXIT_CONFIG_ERROR) from None


def main() -> None:
    """Console-script entry point (``cdc = "cdc.cli:main"``)."""
    cli(prog_name="cdc")


if __name__ == "__main__":
    main()
