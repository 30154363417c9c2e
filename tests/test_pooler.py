"""Behind a transaction-mode pooler a session does not last beyond a transaction: hotdata's
read-only guard, timeouts, locks and settings would not hold. Every command recognises it and
refuses with one line naming the right URL; none reports success."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import pgcluster
from tests.test_cli import hotdata

POOLER_LINE = "is a transaction-mode pooler"
DROPPED_LINE = "did not apply the settings hotdata asked for at connection"
ADVICE = "use the direct connection (port 5432) or a session-mode pooler"


@pytest.fixture(scope="module")
def pooler(pg: pgcluster.Cluster) -> Iterator[pgcluster.Pooler]:
    """Supabase's: transaction mode, only extra_float_digits ignored (options refused)."""
    started = pgcluster.start_pooler(pg)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def dropping_pooler(pg: pgcluster.Cluster) -> Iterator[pgcluster.Pooler]:
    """One that silently drops `options` instead (other poolers do)."""
    started = pgcluster.start_pooler(pg, ignored="extra_float_digits,options")
    try:
        yield started
    finally:
        started.stop()


@pytest.mark.parametrize("command", [
    ["analyze"], ["doctor"], ["db", "upgrade"], ["lint"], ["schema"], ["report"], ["propose"],
    ["drill"], ["serve"]])
def test_every_command_refuses_a_transaction_pooler_with_one_line(
        pooler: pgcluster.Pooler, database: str, tmp_path: Path, command: list[str]) -> None:
    url = pooler.url(database.rsplit("/", 1)[1])
    result = hotdata(tmp_path, *command, HOTDATA_DATABASE_URL=url,
                     HOTDATA_DRILL_DATABASE_URL=url, SLACK_BOT_TOKEN="xoxb-0000-test-token",
                     SLACK_SIGNING_SECRET="abc")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert POOLER_LINE in output and ADVICE in output, output


def test_a_pooler_that_drops_the_settings_is_refused_too(
        dropping_pooler: pgcluster.Pooler, database: str, tmp_path: Path) -> None:
    url = dropping_pooler.url(database.rsplit("/", 1)[1])
    for command in (["analyze"], ["db", "upgrade"]):
        result = hotdata(tmp_path, *command, HOTDATA_DATABASE_URL=url)
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        assert DROPPED_LINE in output and ADVICE in output, output
        assert "default_transaction_read_only" in output or "statement_timeout" in output


def test_the_direct_connection_still_works(database: str, tmp_path: Path) -> None:
    result = hotdata(tmp_path, "db", "upgrade", HOTDATA_DATABASE_URL=database)
    assert result.returncode == 0, result.stderr
