"""Restore drills end to end: a real source cluster (the session `pg`), a second throwaway
cluster as the scratch server, the HotDash sample, pg_dump / pg_restore, no mocks."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bot import locks, migrate, pgcluster, tools
from bot.container import Container
from bot.db import connect
from bot.drills import runner, store
from bot.drills.model import DrillResult
from bot.fake_slack import FakeSlack, FakeSlackServer
from bot.render import drill as render
from bot.sample import hotdash
from bot.server import start_housekeeping
from bot.settings import Settings
from bot.slack import web_client
from tests.conftest import BOT_TOKEN, SIGNING_SECRET
from tests.harness import BotUnderTest

SCALE = 0.05
REPO = Path(__file__).resolve().parent.parent
HOTDATA = Path(sys.executable).parent / "hotdata"
DESIGN_KEYS = {"status", "source", "rto_seconds", "rpo_seconds", "phases", "tables_verified",
               "rows_verified", "policies_verified", "checks"}
# Each source database numbers its drills from its own range, so the scratch databases of
# different tests (all on the one scratch server) never share a name.
_ranges = itertools.count(1)


@dataclass
class Source:
    pg: pgcluster.Cluster
    name: str
    heavy_user: str  # profiles.n = 0, the user owning the most rows
    user: str | None = None  # whom hotdata connects as (default: the superuser)
    password: str | None = None

    @property
    def url(self) -> str:
        return self.pg.url(self.name, self.user, self.password)

    @property
    def dsn(self) -> str:
        return self.pg.dsn(self.name)


# --- set-up helpers -----------------------------------------------------------------------------

def create_source(pg: pgcluster.Cluster, name: str | None = None, user: str | None = None,
                  password: str | None = None) -> Source:
    """A fresh database with HotDash at SCALE (or database `name`, with HotDash loaded
    already), hotdata's state schema (made as `user`) and a heartbeat."""
    if name is None:
        name = f"drill_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with psycopg.connect(pg.dsn(name), autocommit=True) as conn:
            hotdash.load(conn, scale=SCALE)
    with psycopg.connect(pg.dsn(name), autocommit=True) as conn:
        row = conn.execute("SELECT id::text FROM profiles ORDER BY n LIMIT 1").fetchone()
    assert row is not None
    source = Source(pg, name, row[0], user, password)
    asyncio.run(_prepare_state(Settings(_env_file=None, database_url=source.url),  # type: ignore[call-arg]
                               next(_ranges) * 100))
    return source


async def _prepare_state(settings: Settings, first_id: int) -> None:
    async with connect(settings, "state") as conn:
        await migrate.upgrade(conn)
        await conn.execute("SELECT setval(pg_get_serial_sequence('hotdata.drills', 'id'), %s, "
                           "false)", (first_id,))
        await store.heartbeat(conn)


async def latest_drills(settings: Settings) -> list[dict[str, Any]]:
    async with connect(settings, "state") as conn:
        return await store.history(conn, store.TREND)


def drop_database(cluster: pgcluster.Cluster, name: str) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def drill_settings(source: Source, scratch: pgcluster.Cluster, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": source.url, "drill_database_url": scratch.url(),
        "app_role": "authenticated", "app_jwt_claims": json.dumps({"sub": source.heavy_user}),
        **extra}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def run_drill(settings: Settings, **kwargs: Any) -> DrillResult:
    return asyncio.run(runner.run(settings, **kwargs))


def databases(cluster: pgcluster.Cluster) -> set[str]:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def state_rows(source: Source, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def check(result: DrillResult, name: str) -> Any:
    found = [c for c in result.checks if c.name == name]
    assert found, f"no {name!r} check in {[c.name for c in result.checks]}"
    return found[0]


def assert_cleaned_up(source: Source, scratch: pgcluster.Cluster, result: DrillResult) -> None:
    """The drill's scratch database is gone from the server and recorded as dropped."""
    assert result.scratch_database is not None
    assert result.scratch_database not in databases(scratch)
    rows = state_rows(source, "SELECT dropped_at FROM hotdata.drill_databases WHERE name = %s",
                      (result.scratch_database,))
    assert len(rows) == 1 and rows[0][0] is not None


def user_tables(conn: psycopg.Connection[Any]) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'hotdata') ORDER BY 1")]


def exact_counts(source: Source) -> dict[str, int]:
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                for t in user_tables(conn)}


def source_state(source: Source) -> dict[str, Any]:
    """A checksum of every application table and the catalog rows a drill could change."""
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        data = {t: conn.execute(
            f"SELECT count(*), md5(coalesce(string_agg(h, '' ORDER BY h), '')) "
            f"FROM (SELECT md5(x::text) AS h FROM {t} x) rows").fetchone()
            for t in user_tables(conn)}
        classes = conn.execute(
            "SELECT c.oid, n.nspname, c.relname, c.relkind, c.relfilenode, c.relowner, "
            "c.relacl::text, c.relrowsecurity, c.relforcerowsecurity, c.relhasindex "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%' "
            "ORDER BY c.oid").fetchall()
        policies = conn.execute("SELECT * FROM pg_policies ORDER BY 1, 2, 3").fetchall()
        roles = conn.execute("SELECT rolname, rolsuper, rolbypassrls, rolcanlogin FROM pg_roles "
                             "ORDER BY 1").fetchall()
        extensions = conn.execute("SELECT extname, extversion FROM pg_extension "
                                  "ORDER BY 1").fetchall()
    return {"data": data, "classes": classes, "policies": policies, "roles": roles,
            "extensions": extensions}


def client_tool(name: str, dsn: str, password: str | None = None) -> str:
    """The PostgreSQL client tool hotdata would run against the server of `dsn`."""
    with psycopg.connect(dsn, autocommit=True, password=password) as conn:
        return pgcluster.client_tool(name, conn.info.server_version // 10000)


def pg_dump(database_dsn: str, target: Path, *args: str, password: str | None = None) -> None:
    env = dict(os.environ, **({"PGPASSWORD": password} if password else {}))
    done = subprocess.run([client_tool("pg_dump", database_dsn, password), "--format=custom",
                           "--file", str(target), *args, "--dbname", database_dsn], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def pg_dumpall_roles(cluster: pgcluster.Cluster, target: Path) -> None:
    done = subprocess.run([client_tool("pg_dumpall", cluster.dsn()), "--roles-only",
                           "--no-role-passwords", "--file", str(target), "--dbname",
                           cluster.dsn()],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def clone(source: Source) -> str:
    """A copy of the source database (to damage before dumping it); its name."""
    name = f"{source.name}_copy"
    with psycopg.connect(source.pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(source.name)))
    return name


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scratch() -> Iterator[pgcluster.Cluster]:
    """A second throwaway cluster: the server drills create their scratch databases on."""
    cluster = pgcluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def source(pg: pgcluster.Cluster) -> Iterator[Source]:
    made = create_source(pg)
    try:
        yield made
    finally:
        drop_database(pg, made.name)
        drop_database(pg, f"{made.name}_copy")


@pytest.fixture
def dumper(source: Source) -> Iterator[tuple[str, str]]:
    """A LOGIN role that may read every table but neither owns them nor bypasses RLS."""
    role, password = f"dumper_{uuid.uuid4().hex[:8]}", "dump-Pa55"
    with psycopg.connect(source.pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        for schema in ("public", "auth", "hotdata"):
            ident = sql.Identifier(schema)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                ident, sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(
                ident, sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
                ident, sql.Identifier(role)))
        rls = conn.execute("SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = %s",
                           (role,)).fetchone()
        assert rls == (False, False)
    try:
        yield role, password
    finally:
        with psycopg.connect(source.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(source.pg.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@dataclass
class CleanDrill:
    source: Source
    settings: Settings
    result: DrillResult
    heartbeat: datetime
    started: datetime
    finished: datetime
    before: dict[str, Any]
    after: dict[str, Any]
    scratch_after: set[str]


HAND_MADE = "hotdata_drill_999"


@pytest.fixture(scope="module")
def clean(pg: pgcluster.Cluster, scratch: pgcluster.Cluster) -> Iterator[CleanDrill]:
    """One passing drill from the `dump` source, with what the tests compare around it: the
    source's checksums before and after, and a database made by hand on the scratch server."""
    source = create_source(pg)
    with psycopg.connect(scratch.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {HAND_MADE}")
    try:
        settings = drill_settings(source, scratch)
        time.sleep(0.5)  # the heartbeat ages: the RPO must see it
        [(heartbeat,)] = state_rows(source, "SELECT at FROM hotdata.heartbeat")
        before = source_state(source)
        started = datetime.now(UTC)
        result = run_drill(settings, requested_by="U0TESTER")
        finished = datetime.now(UTC)
        yield CleanDrill(source, settings, result, heartbeat, started, finished, before,
                         source_state(source), databases(scratch))
    finally:
        drop_database(scratch, HAND_MADE)
        drop_database(pg, source.name)


# --- a clean drill ------------------------------------------------------------------------------

def test_clean_drill_passes_with_the_documented_json_shape(clean: CleanDrill) -> None:
    result = clean.result
    failed = [c for c in result.checks if not c.ok]
    assert result.status == "passed", failed
    shape = json.loads(render.as_json(result))
    assert set(shape) >= DESIGN_KEYS
    assert shape["status"] == "passed" and shape["source"] == "dump"
    assert [p["name"] for p in shape["phases"]] == ["fetch", "roles", "restore", "verify"]
    assert all(isinstance(p["seconds"], float) and p["seconds"] >= 0 for p in shape["phases"])
    assert shape["checks"] and all(set(c) == {"name", "ok", "detail"} for c in shape["checks"])
    names = {c["name"] for c in shape["checks"]}
    assert {"row counts", "content fingerprints", "RLS policies", "grants", "RLS probes",
            "amcheck"} <= names
    assert shape["rto_seconds"] >= sum(p["seconds"] for p in shape["phases"]) - 0.01


def test_clean_drill_verifies_exact_rows_policies_and_probes(clean: CleanDrill) -> None:
    counts = exact_counts(clean.source)
    assert clean.result.tables_verified == len(counts) == 7
    assert clean.result.rows_verified == sum(counts.values())
    assert clean.result.policies_verified == 2
    # the claims are those of a user who owns rows: the probe is meaningful
    with psycopg.connect(clean.source.dsn) as conn:
        conn.execute("SET ROLE authenticated")
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, false)",
                      (clean.source.heavy_user,))
        [(own,)] = conn.execute("SELECT count(*) FROM notifications").fetchall()
    assert own > 0
    probes = check(clean.result, "RLS probes")
    assert probes.ok and probes.detail.startswith("4 probes"), probes


def test_clean_drill_rpo_is_the_restored_heartbeat_age(clean: CleanDrill) -> None:
    rpo = clean.result.rpo_seconds
    assert rpo is not None and rpo > 0.4
    low = (clean.started - clean.heartbeat).total_seconds()
    high = (clean.finished - clean.heartbeat).total_seconds()
    assert low - 0.05 <= rpo <= high + 0.05


def test_clean_drill_is_recorded_and_its_scratch_database_dropped(
        clean: CleanDrill, scratch: pgcluster.Cluster) -> None:
    rows = state_rows(clean.source, "SELECT status, requested_by, rto_seconds, rpo_seconds, "
                      "result, finished_at FROM hotdata.drills WHERE id = %s",
                      (clean.result.id,))
    [(status, requested_by, rto, rpo, stored, finished_at)] = rows
    assert (status, requested_by) == ("passed", "U0TESTER")
    assert (rto, rpo) == (clean.result.rto_seconds, clean.result.rpo_seconds)
    assert stored["rows_verified"] == clean.result.rows_verified
    assert finished_at is not None
    [(token,)] = state_rows(clean.source, "SELECT token FROM hotdata.installation")
    assert re.fullmatch(r"[0-9a-f]{10}", token)
    assert clean.result.scratch_database == f"hotdata_drill_{token}_{clean.result.id}"
    assert clean.result.scratch_database not in clean.scratch_after
    assert_cleaned_up(clean.source, scratch, clean.result)


def test_a_drill_writes_nothing_to_the_source(clean: CleanDrill) -> None:
    assert len(clean.before["data"]) == 7
    assert clean.after["data"] == clean.before["data"]
    assert clean.after["classes"] == clean.before["classes"]
    assert clean.after["policies"] == clean.before["policies"]
    assert clean.after["roles"] == clean.before["roles"]
    assert clean.after["extensions"] == clean.before["extensions"]


def test_databases_not_created_by_a_drill_are_never_dropped(
        clean: CleanDrill, scratch: pgcluster.Cluster) -> None:
    assert HAND_MADE in clean.scratch_after
    # ...nor by a cleanup pass on its own
    asyncio.run(runner.drop_scratch(clean.settings, scratch.url()))
    assert HAND_MADE in databases(scratch)


def test_runbook_section_is_rewritten_from_the_latest_passing_drill(
        clean: CleanDrill, tmp_path: Path) -> None:
    runbook = tmp_path / "database-recovery.md"
    original = (REPO / "runbooks" / "database-recovery.md").read_text()
    runbook.write_text(original)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("HOTDATA_", "SLACK_"))}
    env["HOTDATA_DATABASE_URL"] = clean.source.url
    done = subprocess.run([str(HOTDATA), "drill", "--runbook", str(runbook)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    text = runbook.read_text()
    head, rest = original.split(render.RUNBOOK_START, 1)
    tail = rest.split(render.RUNBOOK_END, 1)[1]
    assert text.startswith(head) and text.endswith(tail)
    section = text[len(head):len(text) - len(tail)]
    assert "No passing drill" not in section
    assert f"Last passing drill: #{clean.result.id}" in section
    assert f"RTO: **{clean.result.rto_seconds:.1f} s**" in section
    assert f"RPO: **{clean.result.rpo_seconds:.1f} s**" in section
    assert f"{clean.result.rows_verified:,} rows" in section and "2 policies" in section


# --- refusals -----------------------------------------------------------------------------------

def test_one_drill_at_a_time_and_never_onto_the_source_server(
        clean: CleanDrill, pg: pgcluster.Cluster) -> None:
    drills_before = state_rows(clean.source, "SELECT count(*) FROM hotdata.drills")
    with psycopg.connect(clean.source.dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", locks.DRILL)
        with pytest.raises(runner.DrillRefused, match="already running"):
            run_drill(clean.settings)
    with pytest.raises(runner.DrillRefused, match="source server itself"):
        run_drill(clean.settings, scratch_dsn=pg.url("postgres"))
    assert state_rows(clean.source, "SELECT count(*) FROM hotdata.drills") == drills_before


# --- red drills ---------------------------------------------------------------------------------

def test_rto_target_missed_turns_the_drill_red(source: Source,
                                               scratch: pgcluster.Cluster) -> None:
    result = run_drill(drill_settings(source, scratch, rto_target_seconds=0.001))
    assert result.status == "failed"
    rto = check(result, "RTO target")
    assert not rto.ok and "against 0.001 s" in rto.detail
    assert all(c.ok for c in result.checks if c.name != "RTO target")
    assert state_rows(source, "SELECT status FROM hotdata.drills WHERE id = %s",
                      (result.id,)) == [("failed",)]
    assert_cleaned_up(source, scratch, result)


def test_dump_by_a_role_subject_to_rls_is_red(source: Source, scratch: pgcluster.Cluster,
                                              dumper: tuple[str, str]) -> None:
    role, password = dumper
    settings = drill_settings(source, scratch, database_url=source.pg.url(
        source.name, user=role, password=password), state_database_url=source.url)
    result = run_drill(settings)
    assert result.status == "failed"
    backup = check(result, "backup")
    assert not backup.ok
    assert "row-level security" in backup.detail and "pg_dump" in backup.detail
    assert password not in json.dumps(result.as_dict())


def directory_settings(source: Source, scratch: pgcluster.Cluster, backups: Path) -> Settings:
    return drill_settings(source, scratch, drill_source="directory", drill_backup_dir=backups)


def test_directory_dump_taken_under_rls_is_red(source: Source, scratch: pgcluster.Cluster,
                                               dumper: tuple[str, str], tmp_path: Path) -> None:
    """A team's dump made by a role under RLS (with --enable-row-security) holds no rows of
    the RLS tables: compared with the live source, they come back empty."""
    role, password = dumper
    pg_dumpall_roles(source.pg, tmp_path / "globals.sql")
    pg_dump(source.pg.dsn(source.name, user=role), tmp_path / "app.dump",
            "--enable-row-security", password=password)
    result = run_drill(directory_settings(source, scratch, tmp_path))
    assert result.status == "failed"
    counts = check(result, "row counts")
    assert not counts.ok
    assert "empty on the restore but not on the source" in counts.detail
    assert "public.notifications" in counts.detail and "public.decision_log" in counts.detail
    assert_cleaned_up(source, scratch, result)


def test_directory_dump_with_an_emptied_table_is_red(source: Source, scratch: pgcluster.Cluster,
                                                     tmp_path: Path) -> None:
    copy = clone(source)
    with psycopg.connect(source.pg.dsn(copy), autocommit=True) as conn:
        conn.execute("TRUNCATE inventory_actions")
    pg_dumpall_roles(source.pg, tmp_path / "globals.sql")
    pg_dump(source.pg.dsn(copy), tmp_path / "app.dump")
    assert exact_counts(source)["public.inventory_actions"] > 0
    result = run_drill(directory_settings(source, scratch, tmp_path))
    assert result.status == "failed"
    counts = check(result, "row counts")
    assert not counts.ok
    assert "empty on the restore but not on the source: public.inventory_actions" in counts.detail
    # the rest of the restore is as it should be
    assert check(result, "RLS policies").ok and check(result, "grants").ok
    assert_cleaned_up(source, scratch, result)


def test_directory_dump_missing_a_policy_is_red(source: Source, scratch: pgcluster.Cluster,
                                                tmp_path: Path) -> None:
    copy = clone(source)
    with psycopg.connect(source.pg.dsn(copy), autocommit=True) as conn:
        conn.execute("DROP POLICY decision_log_own ON decision_log")
    pg_dumpall_roles(source.pg, tmp_path / "globals.sql")
    pg_dump(source.pg.dsn(copy), tmp_path / "app.dump")
    result = run_drill(directory_settings(source, scratch, tmp_path))
    assert result.status == "failed"
    policies = check(result, "RLS policies")
    assert not policies.ok
    assert "public.decision_log: decision_log_own" in policies.detail
    assert result.policies_verified == 1
    assert check(result, "row counts").ok
    assert_cleaned_up(source, scratch, result)


def test_directory_drill_of_a_good_dump_passes(source: Source, scratch: pgcluster.Cluster,
                                               tmp_path: Path) -> None:
    """The directory checks compare with the live source without crying wolf."""
    pg_dumpall_roles(source.pg, tmp_path / "globals.sql")
    pg_dump(source.dsn, tmp_path / "app.dump")
    result = run_drill(directory_settings(source, scratch, tmp_path))
    assert result.status == "passed", [c for c in result.checks if not c.ok]
    assert result.source == "directory"
    assert result.rows_verified == sum(exact_counts(source).values())
    assert result.policies_verified == 2 and result.rpo_seconds is not None
    assert_cleaned_up(source, scratch, result)


def test_roles_missing_on_the_scratch_server_is_red(source: Source, scratch: pgcluster.Cluster,
                                                    tmp_path: Path) -> None:
    with psycopg.connect(scratch.dsn(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS authenticated")
    pg_dump(source.dsn, tmp_path / "app.dump")  # no globals file beside it
    result = run_drill(directory_settings(source, scratch, tmp_path))
    assert result.status == "failed"
    restore = check(result, "restore")
    assert not restore.ok
    assert 'role "authenticated" does not exist' in restore.detail
    assert_cleaned_up(source, scratch, result)


def scratch_roles(cluster: pgcluster.Cluster) -> dict[str, tuple[Any, ...]]:
    """Every role of a server: its attributes and memberships."""
    with psycopg.connect(cluster.dsn()) as conn:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, "
            "rolreplication, rolbypassrls, rolconnlimit, "
            "(SELECT array_agg(b.rolname ORDER BY b.rolname) FROM pg_auth_members m "
            " JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid) FROM pg_roles r")}


def test_a_drill_never_alters_the_scratch_servers_own_roles(
        source: Source, scratch: pgcluster.Cluster) -> None:
    """The backup's roles file would ALTER every role it names (the bootstrap superuser too):
    existing roles are left exactly as they were, missing ones created without attributes."""
    suffix = uuid.uuid4().hex[:6]
    same, only = f"drill_same_{suffix}", f"drill_only_{suffix}"
    with psycopg.connect(source.pg.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {same} LOGIN CREATEDB CREATEROLE")
        conn.execute(f"CREATE ROLE {only} LOGIN BYPASSRLS IN ROLE {same}")
    with psycopg.connect(scratch.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {same} NOLOGIN")
    try:
        before = scratch_roles(scratch)
        result = run_drill(drill_settings(source, scratch))
        assert result.status == "passed", [c for c in result.checks if not c.ok]
        after = scratch_roles(scratch)
        assert {name: after[name] for name in before} == before
        # created plainly: NOLOGIN, no attribute, no membership
        assert after[only] == (False, True, False, False, False, False, False, -1, None)
        roles = check(result, "roles")
        assert roles.ok and only in roles.detail and same not in roles.detail
    finally:
        for cluster in (source.pg, scratch):
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                conn.execute(f"DROP ROLE IF EXISTS {only}")
                conn.execute(f"DROP ROLE IF EXISTS {same}")


def test_grants_compare_the_same_whatever_each_side_s_search_path(
        source: Source, scratch: pgcluster.Cluster) -> None:
    """Supabase puts `extensions` on the database's search_path; a restored copy does not
    carry that setting. A grant there is the same grant on both sides."""
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA extensions")
        conn.execute("CREATE TABLE extensions.lookup (id int PRIMARY KEY)")
        conn.execute("GRANT USAGE ON SCHEMA extensions TO authenticated")
        conn.execute("GRANT SELECT ON extensions.lookup TO authenticated")
        conn.execute(f'ALTER DATABASE "{source.name}" SET search_path = '
                     '"$user", public, extensions')
    result = run_drill(drill_settings(source, scratch))
    assert check(result, "grants").ok, check(result, "grants").detail
    assert result.status == "passed", [c for c in result.checks if not c.ok]


def test_a_command_line_dump_drill_measures_its_rpo(source: Source, scratch: pgcluster.Cluster,
                                                    tmp_path: Path) -> None:
    """No `hotdata serve` writes the heartbeat: the drill writes its own before the dump."""
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM hotdata.heartbeat")
    env = tools.clean_env()
    env.update(HOTDATA_DATABASE_URL=source.url, HOTDATA_DRILL_DATABASE_URL=scratch.url())
    done = subprocess.run([str(HOTDATA), "drill", "--format", "json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    shape = json.loads(done.stdout)
    assert shape["status"] == "passed"
    assert isinstance(shape["rpo_seconds"], float) and 0 <= shape["rpo_seconds"] < 120


def test_corrupted_dump_is_red_and_cleaned_up(source: Source, scratch: pgcluster.Cluster,
                                              tmp_path: Path) -> None:
    pg_dumpall_roles(source.pg, tmp_path / "globals.sql")
    dump = tmp_path / "app.dump"
    pg_dump(source.dsn, dump)
    with dump.open("r+b") as fh:
        fh.truncate(dump.stat().st_size // 2)
    result = run_drill(directory_settings(source, scratch, tmp_path))
    assert result.status == "failed"
    restore = check(result, "restore")
    assert not restore.ok
    assert "pg_restore" in restore.detail and "corrupt" in restore.detail
    assert [p.name for p in result.phases] == ["fetch", "roles", "restore"]
    assert_cleaned_up(source, scratch, result)


# --- interrupted drills -------------------------------------------------------------------------

async def test_cancelled_restore_is_cleaned_up_and_not_left_running(
        source: Source, scratch: pgcluster.Cluster) -> None:
    settings = drill_settings(source, scratch)
    blockers: list[psycopg.AsyncConnection[Any]] = []

    async def progress(step: str) -> None:
        """Once the scratch database exists, hold `CREATE SCHEMA auth` open in it: pg_restore
        waits on it, midway through the restore, until the drill is cancelled."""
        if not step.startswith("restoring"):
            return
        async with connect(settings, "state") as state:
            cur = await state.execute("SELECT name FROM hotdata.drill_databases "
                                      "WHERE dropped_at IS NULL")
            [row] = await cur.fetchall()
        blocker = await psycopg.AsyncConnection.connect(scratch.dsn(row["name"]))
        await blocker.execute("CREATE SCHEMA auth")  # left uncommitted
        blockers.append(blocker)

    task = asyncio.create_task(runner.run(settings, progress=progress))
    waiting = None
    deadline = time.monotonic() + 30
    while waiting is None:
        assert time.monotonic() < deadline, "pg_restore never started"
        assert not task.done(), task.result()
        async with await psycopg.AsyncConnection.connect(scratch.dsn(), autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT datname FROM pg_stat_activity WHERE application_name = 'pg_restore' "
                "AND wait_event_type = 'Lock'")
            waiting = await cur.fetchone()
        await asyncio.sleep(0.05)
    name = waiting[0]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for blocker in blockers:
        await blocker.close()

    assert name not in databases(scratch)
    with psycopg.connect(scratch.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_stat_activity "
                            "WHERE application_name = 'pg_restore'").fetchone() == (0,)
    [(dropped_at,)] = state_rows(source, "SELECT dropped_at FROM hotdata.drill_databases "
                                 "WHERE name = %s", (name,))
    assert dropped_at is not None
    [(status, stored)] = state_rows(source, "SELECT status, result FROM hotdata.drills "
                                    "WHERE scratch_database = %s OR id = %s",
                                    (name, int(name.rsplit("_", 1)[1])))
    assert status == "failed"
    assert {"name": "drill", "ok": False, "detail": "interrupted: cancelled"} in stored["checks"]

    # the lock was released: the next drill runs, and passes
    following = await runner.run(settings)
    assert following.status == "passed", [c for c in following.checks if not c.ok]
    assert state_rows(source, "SELECT count(*) FROM hotdata.drills "
                      "WHERE status = 'running'") == [(0,)]


def test_next_drill_cleans_up_after_a_crashed_one(source: Source,
                                                  scratch: pgcluster.Cluster) -> None:
    """What a killed process leaves: a drill still 'running' and its recorded scratch database.
    The next drill drops the database and closes the stale drill as failed."""
    with psycopg.connect(source.dsn, autocommit=True) as conn:
        [(crashed,)] = conn.execute("INSERT INTO hotdata.drills (source, requested_by) "
                                    "VALUES ('dump', 'crash') RETURNING id").fetchall()
        leftover = f"hotdata_drill_{crashed}"
        conn.execute("INSERT INTO hotdata.drill_databases (name, drill_id, server) "
                     "VALUES (%s, %s, 'scratch')", (leftover, crashed))
    with psycopg.connect(scratch.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(leftover)))
    result = run_drill(drill_settings(source, scratch))
    assert result.status == "passed", [c for c in result.checks if not c.ok]
    assert leftover not in databases(scratch)
    [(status, finished_at, stored)] = state_rows(
        source, "SELECT status, finished_at, result FROM hotdata.drills WHERE id = %s",
        (crashed,))
    assert status == "failed" and finished_at is not None
    assert stored["checks"][0]["detail"].startswith("interrupted: hotdata stopped")
    assert state_rows(source, "SELECT count(*) FROM hotdata.drill_databases "
                      "WHERE dropped_at IS NULL") == [(0,)]
    # the trend shows it as failed, not forever running
    trend = asyncio.run(latest_drills(drill_settings(source, scratch)))
    assert [(d["id"], d["status"]) for d in trend] == [(result.id, "passed"),
                                                       (crashed, "failed")]


def test_a_drill_killed_mid_way_is_closed_and_its_files_removed_at_the_next_start(
        source: Source, scratch: pgcluster.Cluster, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 while the drill runs: the next start closes it as interrupted, drops its scratch
    database and removes the working directory holding the backup it fetched."""
    # its own temporary directory: another suite's drills work in the system's at the same time
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    env = {k: v for k, v in tools.clean_env().items()}
    env.update(HOTDATA_DATABASE_URL=source.url, HOTDATA_DRILL_DATABASE_URL=scratch.url(),
               TMPDIR=str(tmp_path))
    child = subprocess.Popen([str(HOTDATA), "drill"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work: list[Path] = []
    try:
        while not work:  # the backup is being fetched into the drill's private directory
            assert child.poll() is None, "the drill ended before it could be killed"
            work = [p for p in Path(tempfile.gettempdir()).glob("hotdata-drill-work-*")
                    if any(p.iterdir())]
            time.sleep(0.005)
        child.send_signal(signal.SIGSTOP)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    [leftover] = work
    assert leftover.stat().st_mode & 0o777 == 0o700  # a copy of the data: private
    [(drill_id, status)] = state_rows(source, "SELECT id, status FROM hotdata.drills "
                                              "WHERE requested_by = 'cli'")
    assert status == "running"
    settings = drill_settings(source, scratch)
    container = Container(settings, web_client(settings))

    async def start() -> None:
        start_housekeeping(container)
        await container.tasks.drain()
        await container.pools.close()

    asyncio.run(start())
    assert not leftover.exists()
    [(status, stored)] = state_rows(source, "SELECT status, result FROM hotdata.drills "
                                            "WHERE id = %s", (drill_id,))
    assert status == "failed"
    assert stored["checks"][0]["detail"] == ("interrupted: hotdata stopped before the drill "
                                             "finished")
    assert not any(d.startswith("hotdata_drill_") and d.endswith(f"_{drill_id}")
                   for d in databases(scratch))


# --- Slack --------------------------------------------------------------------------------------

def test_slash_drill_posts_progress_then_the_result(
        source: Source, scratch: pgcluster.Cluster, fake_slack_server: FakeSlackServer,
        slack: FakeSlack) -> None:
    settings = drill_settings(source, scratch, slack_bot_token=BOT_TOKEN,
                              slack_signing_secret=SIGNING_SECRET,
                              slack_api_url=fake_slack_server.api_url, channel="C0HOTDATA")
    bot = BotUnderTest(settings, slack).start()
    try:
        assert bot.requests is not None  # a Home opened before the drill follows it
        assert bot.requests.event({"type": "app_home_opened", "user": "U0LEAD", "tab": "home",
                                   "event_ts": f"{time.time():.6f}"}).status == 200
        slack.wait_for("views.publish", timeout=30)
        reply = bot.slash("drill", channel="C0DBOPS")
        assert reply.status == 200
        assert "Starting a restore drill" in reply.text
        deadline = time.monotonic() + 60
        final = None
        while final is None:
            assert time.monotonic() < deadline, slack.calls
            final = next((u.params for u in slack.answered("chat.update")
                          if u.params.get("blocks")), None)
            time.sleep(0.05)
        [_, home] = slack.wait_for("views.publish", count=2, timeout=60)
    finally:
        bot.stop()
    [posted] = slack.answered("chat.postMessage")
    assert posted.params["channel"] == "C0DBOPS"
    assert "started a restore drill" in posted.params["text"]
    assert final["ts"] == slack.answered("chat.update")[0].params["ts"]
    [(drill_id, status)] = state_rows(source, "SELECT id, status FROM hotdata.drills")
    assert status == "passed"
    assert f"Last: #{drill_id} passed · RTO" in json.dumps(home.params["view"], ensure_ascii=False)
    blocks = final["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == f"Restore drill #{drill_id}: PASSED"
    body = blocks[1]["text"]["text"]
    assert "*RTO*" in body and "*RPO*" in body and "2 policies verified" in body
    assert final["text"].startswith(f":white_check_mark: Restore drill #{drill_id} passed: RTO ")
    assert "RPO " in final["text"]
    assert len(blocks) <= 50 and all(len(b["text"]["text"]) <= 3000
                                     for b in blocks if b["type"] == "section")


# --- the client tools -------------------------------------------------------------------------

def test_client_tools_are_chosen_by_the_server_version(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """pg_dump refuses a newer server: hotdata runs one at least as new as the server, the
    exact version first, and says which it needs when there is none."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 18.1'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("HOTDATA_PG_BINDIR", str(bindir))
    assert pgcluster.client_tool("pg_dump", 18) == str(fake)
    assert pgcluster.tool_major(fake) == 18
    with pytest.raises(tools.ToolMissing) as refused:
        pgcluster.client_tool("pg_dump", 19)
    assert str(refused.value) == ("pg_dump 19 or newer is needed for a PostgreSQL 19 server: "
                                  "install postgresql-client-19 or set HOTDATA_PG_BINDIR")
    # a tool missing from the first directory is looked for in the others
    assert Path(pgcluster.client_tool("pg_restore", 15)).parent != bindir
