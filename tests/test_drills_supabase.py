"""Restore drills of a Supabase-shaped source (tests/supabase.py) connected as its non-superuser
`postgres`: from hotdata's dump, from a team's dump and from pgBackRest to a random moment; onto
a scratch server whose own roles stay exactly as they were. A scratch role that is not a
superuser restores without owners where the dump allows it, and says loudly where it does not."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from bot import pgcluster
from bot.drills import runner
from tests import supabase
from tests.test_drills import (
    Source,
    assert_cleaned_up,
    check,
    create_source,
    databases,
    directory_settings,
    drill_settings,
    exact_counts,
    pg_dump,
    pg_dumpall_roles,
    run_drill,
)
from tests.test_drills_pgbackrest import (  # noqa: F401 (a fixture)
    assert_stopped_at_target,
    heartbeats,
    open_stanza,
    pgbackrest_handles_server,
)

SCRATCH_PASSWORD = "scratch-Pa55"
ROLES_SQL = """
SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
       r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil, r.rolconfig,
       ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
             WHERE m.member = r.oid ORDER BY 1) AS member_of
FROM pg_roles r ORDER BY 1
"""


def supabase_source(cluster: pgcluster.Cluster, name: str | None = None) -> Source:
    """A fresh Supabase-shaped database; hotdata connects to it as `postgres`."""
    return create_source(cluster, name or supabase.clone(cluster), supabase.POSTGRES,
                         supabase.PASSWORD)


def roles(cluster: pgcluster.Cluster) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        return {row[0]: row for row in conn.execute(ROLES_SQL)}


@pytest.fixture(scope="module")
def scratch() -> Iterator[pgcluster.Cluster]:
    """The scratch server: a plain cluster whose bootstrap superuser is `postgres`, as the
    Supabase source's non-superuser `postgres` is not."""
    cluster = pgcluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def source(supabase_pg: pgcluster.Cluster) -> Source:
    return supabase_source(supabase_pg)


@pytest.fixture
def scratch_role(scratch: pgcluster.Cluster) -> Iterator[str]:
    """A LOGIN role on the scratch server with CREATEDB and CREATEROLE, not a superuser; its
    URL. Dropped afterwards with what it owns."""
    role = f"scratcher_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(scratch.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(SCRATCH_PASSWORD)))
    try:
        yield role
    finally:
        with psycopg.connect(scratch.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_dump_drill_of_supabase_passes_and_leaves_the_scratch_roles_as_they_were(
        source: Source, scratch: pgcluster.Cluster) -> None:
    before = roles(scratch)
    result = run_drill(drill_settings(source, scratch))
    assert result.status == "passed", [c for c in result.checks if not c.ok]
    after = roles(scratch)
    assert {name: after[name] for name in before} == before  # postgres still a superuser
    created = set(after) - set(before)
    assert {"supabase_admin", "anon", "authenticated", "service_role"} <= created
    assert not any(after[name][1] or after[name][5] or after[name][6] or after[name][7]
                   for name in created)  # no superuser, login, replication or bypassrls
    assert "supabase_admin" in check(result, "roles").detail
    restore = check(result, "restore")
    assert "not restored: event trigger pgrst_ddl_watch" in restore.detail, restore
    assert check(result, "owners").detail.endswith("tables owned as on the source")
    assert {"grants", "RLS probes", "amcheck", "content fingerprints"} <= {
        c.name for c in result.checks if c.ok}
    counts = exact_counts(source)
    assert "auth.users" in counts and "storage.objects" in counts
    assert result.rows_verified == sum(counts.values())
    assert_cleaned_up(source, scratch, result)


def test_a_teams_own_dump_of_supabase_passes(source: Source, scratch: pgcluster.Cluster,
                                             tmp_path: Path) -> None:
    pg_dumpall_roles(source.pg, tmp_path / "globals.sql")
    pg_dump(source.dsn, tmp_path / "app.dump")
    result = run_drill(directory_settings(source, scratch, tmp_path))
    assert result.status == "passed", [c for c in result.checks if not c.ok]
    assert result.source == "directory" and result.rpo_seconds is not None
    assert_cleaned_up(source, scratch, result)


def test_a_scratch_role_that_is_not_a_superuser_says_which_extensions_it_cannot_create(
        source: Source, scratch: pgcluster.Cluster, scratch_role: str) -> None:
    before = databases(scratch)
    result = run_drill(drill_settings(source, scratch, drill_database_url=scratch.url(
        user=scratch_role, password=SCRATCH_PASSWORD)))
    assert result.status == "failed"
    restore = check(result, "restore")
    assert not restore.ok
    # those of the source's extensions that are not trusted (HypoPG only where it is installed:
    # the embedded PostgreSQL 18 has none)
    with psycopg.connect(source.pg.dsn(source.name), autocommit=True) as conn:
        installed = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
    untrusted = sorted(installed & {"amcheck", "hypopg", "pg_stat_statements"})
    assert len(untrusted) >= 2
    assert f"only a superuser can create: {', '.join(untrusted)}" in restore.detail
    assert "README" in restore.detail
    assert databases(scratch) == before


@pytest.fixture(scope="module")
def plain(supabase_pg: pgcluster.Cluster) -> Source:
    """A database of the Supabase cluster without extensions: the HotDash sample, owned by
    `postgres`, as a dump a non-superuser may restore."""
    name = f"plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(supabase_pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER postgres").format(sql.Identifier(name)))
    from bot.sample import hotdash
    with psycopg.connect(supabase.url(supabase_pg, name), autocommit=True) as conn:
        hotdash.load(conn, scale=supabase.SCALE)
    return supabase_source(supabase_pg, name)


def test_a_scratch_role_that_is_not_a_superuser_restores_without_owners(
        plain: Source, scratch: pgcluster.Cluster, scratch_role: str, tmp_path: Path) -> None:
    """Ownership mapped: the scratch role owns everything, standing in for `postgres`, and what
    it holds as owner counts as the owner's; a grant lost in the dump still fails."""
    with psycopg.connect(scratch.dsn(), autocommit=True) as conn:  # for the RLS probes
        for role in ("anon", "authenticated"):
            conn.execute(sql.SQL("DO $$ BEGIN CREATE ROLE {}; EXCEPTION WHEN duplicate_object "
                                 "THEN NULL; END $$").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role),
                                                          sql.Identifier(scratch_role)))
    url = scratch.url(user=scratch_role, password=SCRATCH_PASSWORD)
    result = run_drill(drill_settings(plain, scratch, drill_database_url=url))
    assert result.status == "passed", [c for c in result.checks if not c.ok]
    assert f"restored without owners (the scratch role {scratch_role}" in check(
        result, "restore").detail
    owners = check(result, "owners")
    assert owners.detail == (f"restored without owners: {scratch_role} owns the "
                             f"{len(exact_counts(plain))} tables, standing in for postgres")
    assert check(result, "amcheck").detail.startswith("skipped: only a superuser")
    assert_cleaned_up(plain, scratch, result)

    copy = f"{plain.name}_revoked"
    with psycopg.connect(plain.pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(copy), sql.Identifier(plain.name)))
    try:
        with psycopg.connect(plain.pg.dsn(copy), autocommit=True) as conn:
            conn.execute("REVOKE SELECT ON public.profiles FROM authenticated")
        pg_dump(plain.pg.dsn(copy), tmp_path / "app.dump")
        settings = directory_settings(plain, scratch, tmp_path)
        settings.drill_database_url = url
        result = run_drill(settings)
    finally:
        with psycopg.connect(plain.pg.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(copy)))
    assert result.status == "failed"
    grants = check(result, "grants")
    assert not grants.ok and "authenticated SELECT on public.profiles" in grants.detail, grants
    assert check(result, "owners").ok


@pytest.mark.usefixtures("pgbackrest_handles_server")
def test_a_point_in_time_drill_of_supabase_stops_at_its_target() -> None:
    def make_cluster(conf: dict[str, str]) -> pgcluster.Cluster:
        return supabase.create_cluster(conf)

    with open_stanza(make_cluster, supabase_source) as stanza:
        before = roles(stanza.source.pg)
        with heartbeats(stanza.source) as written:
            result = asyncio.run(runner.run(stanza.settings(drill_target="random")))
            finished = datetime.now(UTC)
        assert_stopped_at_target(result, written, finished)
        assert check(result, "owners").ok and check(result, "grants").ok
        assert roles(stanza.source.pg) == before
