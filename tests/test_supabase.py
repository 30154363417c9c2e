"""hotdata on a database laid out as a hosted Supabase project (tests/supabase.py), connected as
its `postgres` role, which is not a superuser: every command, the lint of what the API exposes,
an index proposed, approved by a manager and applied through the signed Slack flow, the leader
election of two `hotdata serve` replicas; and Supabase's transaction-mode pooler (PgBouncer on
6543) in front of it refused by every command with one line."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from bot import locks, pgcluster
from bot.advisor.pipeline import analyze
from bot.fake_slack import FakeSlack, FakeSlackServer
from bot.flows.analysis import record
from bot.render.proposals import APPROVE
from bot.sample import hotdash as sample
from tests import supabase
from tests.conftest import BOT_TOKEN, SIGNING_SECRET
from tests.harness import BotUnderTest, advised, advised_env, drop, offers_hypopg
from tests.test_cli import hotdata
from tests.test_pooler import ADVICE, POOLER_LINE
from tests.test_schedule import Cluster as Replicas

CHANNEL = "C0HOTDATA"
ENGINEER, MANAGER = "U0ENGINEER", "U0MANAGER"
FAR_AWAY = "0 0 1 1 *"  # no scheduled job runs while a test looks at the replicas
T = TypeVar("T")


def dbname(url: str) -> str:
    return url.rsplit("/", 1)[1]


def wait_until(what: str, check: Callable[[], T | None], timeout: float,
               detail: Callable[[], str] = lambda: "") -> T:
    """`check()`'s first truthy answer, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s {detail()}")
        time.sleep(0.05)


def query(dsn: str, text: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(text, params).fetchall()


def run_workload(url: str) -> None:
    """The HotDash dashboard's reads, run as `postgres` (pg_stat_statements records them)."""
    with psycopg.connect(url, autocommit=True) as conn:
        sample.run(conn, sample.workload_plan(conn, seed=7, scale_weights=0.1))


def assert_extension_checks(checks: dict[str, dict[str, Any]], hypopg: bool) -> None:
    """`hotdata doctor` finds pg_stat_statements, and HypoPG where the server offers it, in
    schema `extensions`; without HypoPG on the server it warns (the advisor then needs a
    scratch copy) and the doctor still passes."""
    for name in ("pg_stat_statements", "hypopg") if hypopg else ("pg_stat_statements",):
        assert checks[name]["state"] == "ok", checks[name]
        assert checks[name]["detail"].startswith("available, installed "), checks[name]
        assert checks[name]["detail"].endswith(" in schema extensions"), checks[name]
    if not hypopg:
        assert checks["hypopg"]["state"] == "warn", checks["hypopg"]
        assert checks["hypopg"]["detail"].startswith("not available on the server"), checks


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert supabase.PASSWORD not in output
    assert result.returncode == 0, output


# --- every command, directly, as the non-superuser `postgres` ---------------------------------


def test_every_command_works_as_supabase_postgres(supabase_pg: pgcluster.Cluster,
                                                  supabase_db: str, tmp_path: Path) -> None:
    admin = supabase_pg.dsn(dbname(supabase_db))
    installed = {r["extname"]: r["schema"] for r in query(
        admin, "SELECT e.extname, n.nspname AS schema FROM pg_extension e "
               "JOIN pg_namespace n ON n.oid = e.extnamespace")}
    hypopg = offers_hypopg(supabase_db)
    assert installed["pg_stat_statements"] == "extensions"
    assert installed.get("hypopg") == ("extensions" if hypopg else None)
    [role] = query(supabase_db, "SELECT current_user AS name, rolsuper FROM pg_roles "
                                "WHERE rolname = current_user")
    assert role == {"name": "postgres", "rolsuper": False}

    upgrade = hotdata(tmp_path, "db", "upgrade", "--dsn", supabase_db)
    assert_clean(upgrade)
    assert "applied" in upgrade.stdout
    [owner] = query(admin, "SELECT nspowner::regrole::text AS owner FROM pg_namespace "
                           "WHERE nspname = 'hotdata'")
    assert owner == {"owner": "postgres"}
    # the API's roles cannot reach hotdata's state (proposals, audit log, analyses)
    assert query(admin, "SELECT r FROM unnest(array['anon', 'authenticated', 'service_role']) r "
                        "WHERE has_schema_privilege(r, 'hotdata', 'USAGE') "
                        "OR has_table_privilege(r, 'hotdata.proposals', 'SELECT')") == []

    doctor = hotdata(tmp_path, "doctor", "--dsn", supabase_db, "--format", "json")
    assert_clean(doctor)
    report = json.loads(doctor.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    assert report["ok"] is True
    assert "connected as postgres, read-only" in checks["target database"]["detail"]
    assert checks["analysis role"]["state"] == "ok"
    assert checks["analysis role"]["detail"] == "postgres is not a superuser"
    assert_extension_checks(checks, hypopg)
    assert checks["state schema"]["state"] == "ok"

    run_workload(supabase_db)
    # without HypoPG, candidates are built on the fixture's scratch copy
    analysis = hotdata(tmp_path, "analyze", "--dsn", supabase_db, "--format", "json",
                       **advised_env(supabase_db))
    assert_clean(analysis)
    found = json.loads(analysis.stdout)
    ran = {r["query"] for r in query(
        admin, "SELECT s.query FROM extensions.pg_stat_statements s "
               "JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = 'postgres' "
               "AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())")}
    measured = [q for q in found["queries"] if q["source"] == "pg_stat_statements"]
    assert measured, found["notes"]
    assert all(q["query"] in ran for q in measured)
    assert any("FROM notifications WHERE user_id = $1" in q["query"] for q in measured)
    assert all(q["error"] is None for q in found["queries"]), found["queries"]
    assert found["recommendations"], found["notes"]

    lint = hotdata(tmp_path, "lint", "--dsn", supabase_db)
    assert_clean(lint)
    assert "Schema lint:" in lint.stdout
    schema = hotdata(tmp_path, "schema", "--dsn", supabase_db)
    assert_clean(schema)
    assert schema.stdout.startswith("# Schema public")
    assert "announcements {" in schema.stdout and "notifications {" in schema.stdout
    report_run = hotdata(tmp_path, "report", "--dsn", supabase_db, "--format", "markdown")
    assert_clean(report_run)
    assert report_run.stdout.startswith("# hotdata report: ")
    assert "FROM notifications WHERE user_id = $1" in report_run.stdout


def test_the_extensions_are_found_in_their_schema_whatever_the_search_path(
        supabase_pg: pgcluster.Cluster, supabase_db: str, tmp_path: Path) -> None:
    """A role whose search_path lacks `extensions` (a dedicated hotdata role has the default
    one) still reaches pg_stat_statements and HypoPG there."""
    name = dbname(supabase_db)
    with psycopg.connect(supabase_pg.dsn(name), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE postgres IN DATABASE {} SET search_path = "
                             "\"$user\", public").format(sql.Identifier(name)))
    [path] = query(supabase_db, "SELECT current_setting('search_path') AS path")
    assert "extensions" not in path["path"]
    assert_clean(hotdata(tmp_path, "db", "upgrade", "--dsn", supabase_db))
    doctor = hotdata(tmp_path, "doctor", "--dsn", supabase_db, "--format", "json")
    assert_clean(doctor)
    checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
    assert_extension_checks(checks, offers_hypopg(supabase_db))

    run_workload(supabase_db)
    analysis = hotdata(tmp_path, "analyze", "--dsn", supabase_db, "--format", "json",
                       **advised_env(supabase_db))
    assert_clean(analysis)
    found = json.loads(analysis.stdout)
    assert [q for q in found["queries"] if q["source"] == "pg_stat_statements"], found["notes"]
    # HypoPG's what-if indexes, or without it candidates built on the scratch copy
    assert found["recommendations"], found["notes"]


# --- lint: what the API exposes ---------------------------------------------------------------


def test_lint_says_which_findings_only_the_platform_may_fix(supabase_db: str,
                                                           tmp_path: Path) -> None:
    """`storage.objects` belongs to supabase_storage_admin: `postgres` cannot index it, and the
    finding says whose it is; the team's own tables carry no such remark."""
    result = hotdata(tmp_path, "lint", "--dsn", supabase_db, "--format", "json")
    assert_clean(result)
    findings = json.loads(result.stdout)["findings"]
    [storage] = [f for f in findings if f["kind"] == "unindexed_fk"
                 and f["table"] == "storage.objects"]
    assert storage["fix"].endswith("(only supabase_storage_admin, its owner, may: this role "
                                   "is not a member of it)"), storage
    ours = [f for f in findings if (f["table"] or "").startswith("public.")]
    assert ours and not any("its owner, may" in f["fix"] for f in ours)



def test_lint_with_the_authenticated_app_role_names_anon_on_an_unprotected_table(
        supabase_db: str, tmp_path: Path) -> None:
    def unprotected() -> dict[str, dict[str, Any]]:
        result = hotdata(tmp_path, "lint", "--dsn", supabase_db, "--format", "json",
                         HOTDATA_APP_ROLE="authenticated")
        assert_clean(result)
        return {f["table"]: f for f in json.loads(result.stdout)["findings"]
                if f["kind"] == "rls_disabled"}

    def readers(finding: dict[str, Any]) -> set[str]:
        said = re.search(r" and (.+) can SELECT it", finding["detail"])
        assert said, finding
        return set(said.group(1).split(", "))

    found = unprotected()
    announcements = found["public.announcements"]
    assert readers(announcements) == {"anon", "authenticated"}
    assert announcements["fix"].startswith(
        'ALTER TABLE "public"."announcements" ENABLE ROW LEVEL SECURITY;')
    # tables with row level security on are not reported
    assert "public.notifications" not in found and "storage.objects" not in found

    # readable by anon only: still found although the application role is authenticated
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        conn.execute("REVOKE ALL ON public.announcements FROM authenticated")
    assert readers(unprotected()["public.announcements"]) == {"anon"}


# --- an index proposed, approved by a manager and applied, as the non-superuser owner ---------


def test_an_approved_index_is_applied_as_postgres_with_the_event_trigger_on(
        supabase_pg: pgcluster.Cluster, supabase_db: str, fake_slack_server: FakeSlackServer,
        slack: FakeSlack) -> None:
    admin = supabase_pg.dsn(dbname(supabase_db))
    run_workload(supabase_db)
    settings = advised(supabase_db, slack_bot_token=BOT_TOKEN,
                       slack_signing_secret=SIGNING_SECRET,
                       slack_api_url=fake_slack_server.api_url, channel=CHANNEL,
                       manager_ids=[MANAGER])
    bot = BotUnderTest(settings, slack).start()
    try:
        analysis = bot.run(analyze(settings, top=10))
        assert analysis.recommendations, analysis.notes
        bot.run(record(settings, analysis, ENGINEER))

        reply = bot.slash("propose", user=ENGINEER)
        assert reply.status == 200 and "Proposing" in reply.text
        [done] = slack.wait_for(f"response_url/{reply.response_key}", timeout=30)
        assert f"index migration(s) in <#{CHANNEL}>" in done.params["text"]
        proposals = query(supabase_db, "SELECT id, table_name, index_name, status, sql_sha256 "
                                       "FROM hotdata.proposals ORDER BY id")
        assert proposals and {p["status"] for p in proposals} == {"pending"}
        chosen = next((p for p in proposals if p["table_name"] == "public.notifications"),
                      proposals[0])
        pid = chosen["id"]

        with psycopg.connect(admin, autocommit=True) as listener:
            listener.execute("LISTEN pgrst")
            assert bot.requests is not None
            click = bot.requests.click(APPROVE, f"{pid}:{chosen['sql_sha256'][:12]}",
                                       user=MANAGER)
            assert click.status == 200
            [answer] = slack.wait_for(f"response_url/{click.response_key}", timeout=60)
            notified = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    finally:
        bot.stop()

    [final] = query(supabase_db, "SELECT status, result FROM hotdata.proposals WHERE id = %s",
                    (pid,))
    assert answer.params["text"] == (f"Approved index migration #{pid}; the result is in "
                                     "the channel."), final
    assert final["status"] == "applied", final
    assert final["result"]["size_bytes"] > 0 and final["result"]["attempts"] == 1
    # the index exists, valid and ready, owned by the table's owner, as the superuser sees it
    [index] = query(admin, "SELECT i.indisvalid, i.indisready, c.relowner::regrole::text AS "
                           "owner FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                           "WHERE i.indexrelid = to_regclass(%s) AND i.indrelid = "
                           "to_regclass(%s)",
                    (f"public.{chosen['index_name']}", chosen["table_name"]))
    assert index == {"indisvalid": True, "indisready": True, "owner": "postgres"}
    assert query(admin, "SELECT indexrelid::regclass::text AS name FROM pg_index "
                        "WHERE NOT indisvalid") == []
    # PostgREST's event trigger stayed on and fired for the build: the apply went through it
    [trigger] = query(admin, "SELECT evtenabled FROM pg_event_trigger "
                             "WHERE evtname = 'pgrst_ddl_watch'")
    assert trigger == {"evtenabled": "O"}
    assert notified == ["reload schema"]


# --- leader election between two replicas -----------------------------------------------------


def leader_locks(url: str) -> list[dict[str, Any]]:
    """The sessions holding the leader's advisory lock."""
    return query(url, "SELECT l.pid, a.usename FROM pg_locks l "
                      "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                      "AND l.classid = %s AND l.objid = %s AND l.granted", locks.LEADER)


def test_two_replicas_elect_exactly_one_leader_as_postgres(
        supabase_db: str, fake_slack_server: FakeSlackServer, slack: FakeSlack,
        tmp_path: Path) -> None:
    cluster = Replicas(supabase_db, slack, fake_slack_server.api_url, tmp_path)
    replicas = [cluster.start(report_cron=FAR_AWAY) for _ in (1, 2)]

    def logs() -> str:
        return "\n".join(cluster.output(r) for r in replicas)

    try:
        cluster.healthy(*replicas)
        pids = {str(r.pid): r for r in replicas}

        def campaigned() -> dict[str, bool] | None:
            rows = query(supabase_db, "SELECT name, leader FROM hotdata.replicas")
            seen = {r["name"].rsplit("-", 1)[1]: r["leader"] for r in rows}
            return seen if set(seen) == set(pids) else None

        seen = wait_until("both replicas campaign", campaigned, 30, logs)
        assert sorted(seen.values()) == [False, True], seen
        assert [h["usename"] for h in leader_locks(supabase_db)] == ["postgres"]
        leader = next(pid for pid, lead in seen.items() if lead)
        [follower] = set(pids) - {leader}
        assert all(replica.alive() for replica in replicas), logs()
        assert f"-{leader} is the leader" in cluster.output(pids[leader])
        assert "is the leader" not in cluster.output(pids[follower])

        # the leader stops: the other, campaigning as postgres too, takes the lock over
        cluster.terminate(pids[leader])
        assert pids[leader].process.returncode == 0, cluster.output(pids[leader])
        wait_until("the follower leads", lambda: (campaigned() or {}).get(follower), 30, logs)
        assert [h["usename"] for h in leader_locks(supabase_db)] == ["postgres"]
        assert f"-{follower} is the leader" in cluster.output(pids[follower])
        assert "Traceback" not in logs()
        cluster.terminate(*replicas)
    finally:
        cluster.stop_all()
    for replica in replicas:
        assert replica.process.returncode == 0, cluster.output(replica)


# --- a transaction-mode pooler in front of it ------------------------------------------------


@pytest.fixture(scope="module")
def pooler(supabase_pg: pgcluster.Cluster) -> Iterator[pgcluster.Pooler]:
    """Supabase's: transaction mode, `options` refused, logging in as `postgres`."""
    started = pgcluster.start_pooler(supabase_pg, users={supabase.POSTGRES: supabase.PASSWORD})
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def ready_db(supabase_pg: pgcluster.Cluster,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Supabase-shaped database on which every command succeeds directly (state schema
    upgraded, statements recorded): only the pooler can make them fail. Its name."""
    name = supabase.clone(supabase_pg)
    try:
        url = supabase.url(supabase_pg, name)
        assert_clean(hotdata(tmp_path_factory.mktemp("upgrade"), "db", "upgrade", "--dsn", url))
        run_workload(url)
        yield name
    finally:
        drop(supabase_pg, name)


# What each command prints when it succeeds; none may appear behind the pooler.
SUCCESS = {
    "analyze": ["Query analysis"], "doctor": ["reachable"],
    "db": ["applied", "up to date"], "lint": ["Schema lint"], "schema": ["# Schema"],
    "report": ["hotdata report"], "propose": ["posted for approval", "not posted to Slack",
                                              "nothing to propose", "already proposed"],
    "drill": ["passed"], "serve": ["listening"]}


@pytest.mark.parametrize("command", [
    ["analyze"], ["doctor", "--format", "json"], ["db", "upgrade"], ["lint"], ["schema"],
    ["report"], ["propose"], ["drill"], ["serve"]])
def test_every_command_refuses_supabases_transaction_pooler(
        pooler: pgcluster.Pooler, ready_db: str, fake_slack_server: FakeSlackServer,
        tmp_path: Path, command: list[str]) -> None:
    url = pooler.url(ready_db, supabase.POSTGRES)
    with psycopg.connect(url, autocommit=True) as conn:  # the pooler does let `postgres` in
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    result = hotdata(tmp_path, *command, HOTDATA_DATABASE_URL=url,
                     HOTDATA_DRILL_DATABASE_URL=url, SLACK_BOT_TOKEN=BOT_TOKEN,
                     SLACK_SIGNING_SECRET=SIGNING_SECRET,
                     HOTDATA_SLACK_API_URL=fake_slack_server.api_url,
                     HOTDATA_PORT=str(pgcluster.free_port()))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert POOLER_LINE in output and ADVICE in output, output
    assert f"postgresql://postgres@127.0.0.1:{pooler.port}/{ready_db}" in output, output
    for word in SUCCESS[command[0]]:
        assert word not in output, output
    if command[0] == "doctor":  # each database check fails with the line; only Slack is fine
        checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
        for name in ("target database", "state schema"):
            assert checks[name]["state"] == "fail", checks
            assert POOLER_LINE in checks[name]["detail"], checks
        assert checks["slack"]["state"] == "ok", checks
