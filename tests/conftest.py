"""Shared fixtures: one real Kafka broker per test session (and fresh ones where a test needs it)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import settings

from evcharging.adapters.kafka.watch import quiet_client_logs
from evcharging.ops.kafka_broker import BrokerConfig
from tests.support.broker import running_broker


@pytest.fixture(scope="session")
def kafka_broker_cfg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerConfig]:
    with running_broker(tmp_path_factory.mktemp("kafka")) as cfg:
        yield cfg


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker_cfg: BrokerConfig) -> str:
    """host:port of a real broker whose topics (contracts.topics.ALL_TOPICS) exist."""
    return kafka_broker_cfg.bootstrap


quiet_client_logs()  # as every program does: aiokafka's retries are not our errors

# Property tests check behaviour, not speed (speed lives in bench/): on a machine whose cores are
# busy one example can take 600 ms, which Hypothesis's default 200 ms deadline calls a failure.
settings.register_profile("evcharging", deadline=None)
settings.load_profile("evcharging")


@pytest.fixture(autouse=True)
def _no_unexpected_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test when an ERROR or an unretrieved task exception shows up in the logs."""
    caplog.set_level(logging.INFO)
    yield
    bad = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    bad += [
        r
        for r in caplog.get_records("call")
        if "Task exception was never retrieved" in r.getMessage()
    ]
    if bad:
        pytest.fail("unexpected errors in the log:\n" + "\n".join(r.getMessage() for r in bad))
