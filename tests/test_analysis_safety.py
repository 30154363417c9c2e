"""EXPLAIN ANALYZE never runs what could have side effects, even inside a SELECT."""

from __future__ import annotations

from pathlib import Path

import psycopg

from bot.analysis.pipeline import analyze
from bot.settings import Settings


async def test_select_calling_a_volatile_function_is_estimated_only(
        database: str, tmp_path: Path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE jobs (id int PRIMARY KEY, status text)")
        conn.execute("INSERT INTO jobs SELECT g, 'queued' FROM generate_series(1, 100) g")
        conn.execute("CREATE SEQUENCE ticket")
    watched = tmp_path / "watched.toml"
    watched.write_text(
        '[[query]]\nname = "claim jobs"\n'
        "sql = \"SELECT id FROM jobs WHERE status = 'queued' AND pg_try_advisory_lock(id) "
        'LIMIT 20"\n\n'
        '[[query]]\nname = "next ticket"\nsql = "SELECT nextval(\'ticket\')"\n\n'
        '[[query]]\nname = "random sample"\n'
        'sql = "SELECT id FROM jobs WHERE random() < 0.5"\n')
    settings = Settings(_env_file=None, database_url=database,  # type: ignore[call-arg]
                        watched_queries=watched)
    locks: list[int] = []

    async def progress(_: str) -> None:
        with psycopg.connect(database) as probe:
            row = probe.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                ).fetchone()
            locks.append(row[0] if row else -1)

    result = await analyze(settings, top=5, progress=progress)
    by_name = {r.statement.name: r for r in result.results}
    for name, function in (("claim jobs", "pg_try_advisory_lock"), ("next ticket", "nextval")):
        runs = by_name[name].runs
        assert runs and not any(r.analyzed for r in runs)
        assert any(function in note and "side effects" in note for note in by_name[name].notes)
    assert all(r.analyzed for r in by_name["random sample"].runs)
    assert set(locks) == {0}
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT last_value, is_called FROM ticket").fetchone() == (1, False)
