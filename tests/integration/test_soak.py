"""A short run of the fault-injection soak (bench/soak.py) per delivery mode: 5 SIGKILLs
of the daemon, one broker and one PostgreSQL crash, under a live workload, then every
event checked against the table.

It starts a PostgreSQL and a Kafka of its own (shared by both modes): the soak kills and
restarts them, which the session's services must never see.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bench import soak
from cdc.testing.kafka import start_kafka
from cdc.testing.postgres import start_postgres

KILLS = 5


@pytest.fixture(scope="module")
def soak_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[soak.Services]:
    base = tmp_path_factory.mktemp("soak-services")
    pg = start_postgres(base / "pg")
    try:
        kafka = start_kafka(base / "kafka")
        try:
            yield soak.Services(pg, kafka)
        finally:
            kafka.stop()
    finally:
        pg.stop()


@pytest.mark.slow
@pytest.mark.parametrize("mode", soak.MODES)
def test_soak_survives_kills_and_crashes(
    soak_services: soak.Services, tmp_path: Path, mode: soak.Mode
) -> None:
    seed = random.SystemRandom().randrange(2**32)
    result = soak.run_mode(soak_services, tmp_path, mode, kills=KILLS, seed=seed)
    line = orjson.dumps(result).decode()
    print(line)
    assert result["kills"] == KILLS, line
    assert result["broker_restarts"] == 1, line
    assert result["postgres_restarts"] == 1, line
    assert soak.passed(result), (
        f"{line}\nproblems: {tmp_path}/{result['connector']}/problems.json,"
        f" daemon log: {tmp_path}/{result['connector']}/daemon.log"
    )
