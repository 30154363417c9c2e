"""EXPLAIN ANALYZE never runs what could have side effects, even inside a SELECT."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from bot.advisor.pipeline import analyze
from bot.pgcluster import Cluster
from bot.render import analysis as render
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


async def test_watched_queries_reach_no_file_program_table_or_other_database(
        pg: Cluster, database: str, tmp_path: Path) -> None:
    """The analysis role SECURITY.md sets up (no superuser, read-only) plans what an operator
    put in the watched-queries file; the function tricks tried on schema review get nowhere
    here either, even through a function that lies about being IMMUTABLE (the planner runs
    those while it plans)."""
    marker = Path("/tmp") / f"hotdata-watched-{uuid.uuid4().hex}"
    role, password = f"hotdata_ro_{uuid.uuid4().hex[:8]}", "ro-secret-pw"
    dbname = database.rsplit("/", 1)[1]
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION dblink")
        conn.execute("CREATE TABLE ledger (id int)")
        conn.execute(sql.SQL("""
            CREATE FUNCTION run_program() RETURNS int LANGUAGE plpgsql AS $$
            BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ' || quote_literal({}); RETURN 1; END $$
            """).format(sql.Literal(f"touch {marker}")))
        conn.execute("CREATE FUNCTION attack() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ "
                     "BEGIN RETURN run_program(); END $$")
        conn.execute("CREATE FUNCTION write_ledger() RETURNS int LANGUAGE plpgsql AS $$ "
                     "BEGIN INSERT INTO ledger VALUES (1); RETURN 1; END $$")
        conn.execute("CREATE FUNCTION book() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ "
                     "BEGIN RETURN write_ledger(); END $$")
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT pg_read_all_data, pg_read_all_stats TO {}").format(
            sql.Identifier(role)))
        conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(
            sql.Identifier(role)))
    target = f"host=127.0.0.1 port={pg.port} user=postgres dbname={dbname}"
    watched = tmp_path / "watched.toml"
    watched.write_text(
        '[[query]]\nname = "read a file"\nsql = "SELECT pg_read_file(\'/etc/passwd\')"\n\n'
        '[[query]]\nname = "run a program"\nsql = "SELECT attack()"\n\n'
        '[[query]]\nname = "write"\nsql = "SELECT book()"\n\n'
        f'[[query]]\nname = "reach the target"\nsql = "SELECT dblink_exec(\'{target}\', '
        "'CREATE TABLE pwned ()')\"\n")
    settings = Settings(_env_file=None,  # type: ignore[call-arg]
                        database_url=pg.url(dbname, user=role, password=password),
                        watched_queries=watched)
    try:
        result = await analyze(settings, top=5)
    finally:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    by_name = {r.statement.name: r for r in result.results}
    assert "pg_execute_server_program" in (by_name["run a program"].error or "")
    assert "read-only transaction" in (by_name["write"].error or "")
    assert not any(run.analyzed for name in ("read a file", "reach the target")
                   for run in by_name[name].runs)
    assert not marker.exists()
    shown = render.as_json(result) + render.markdown(result)
    assert "root:" not in shown and password not in shown
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM ledger").fetchone() == (0,)
        assert conn.execute("SELECT to_regclass('public.pwned')").fetchone() == (None,)
