"""Schema lint and index cleanup on a real PostgreSQL: each check on a case built for it, the
HotDash sample, the CLI and `/hotdata lint` through the signed Slack flow."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pglast
import psycopg
import pytest
from pglast import ast, enums
from psycopg import sql
from psycopg.rows import dict_row

from bot.advisor import cleanup, lint
from bot.analysis.model import Finding
from bot.catalog import MARK
from bot.pgcluster import Cluster
from bot.render import lint as render_lint
from bot.settings import Settings
from tests.harness import BotUnderTest
from tests.test_cli import hotdata

AUTH = """
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
AS $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
"""


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


async def run_lint(url: str, app_role: str | None = None, min_age: int = 0,
                   notes: list[str] | None = None) -> list[Finding]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True,
                                                     row_factory=dict_row) as conn:
        return await lint.lint(conn, app_role, unused_min_age_days=min_age, notes=notes)


async def run_cleanup(url: str, min_age: int = 0) -> list[dict]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True,
                                                     row_factory=dict_row) as conn:
        return await cleanup.cleanup(conn, min_age)


def of(findings: list[Finding], kind: str) -> list[Finding]:
    return [f for f in findings if f.kind == kind]


def dropped(fixes: list[str]) -> set[str]:
    """Index names in DROP INDEX statements, as pglast reads them."""
    names = set()
    for fix in fixes:
        for raw in pglast.parse_sql(fix):
            stmt = raw.stmt
            assert isinstance(stmt, ast.DropStmt)
            assert stmt.removeType == enums.ObjectType.OBJECT_INDEX
            assert stmt.concurrent and stmt.missing_ok
            names |= {obj[-1].sval for obj in stmt.objects}
    return names


@pytest.fixture
def app_role(pg: Cluster, database: str) -> Iterator[str]:
    """A NOLOGIN application role, like Supabase's `authenticated`, gone afterwards."""
    role = f"lint_app_{uuid.uuid4().hex[:8]}"
    execute(pg.dsn(), sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)).as_string())
    try:
        yield role
    finally:
        drop_owned = sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)).as_string()
        execute(database, drop_owned)
        execute(pg.dsn(), sql.SQL("DROP ROLE {}").format(sql.Identifier(role)).as_string())


def clean_schema(role: str) -> list[str]:
    return [AUTH, f"""
CREATE TABLE accounts (id uuid PRIMARY KEY, email text UNIQUE);
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     account_id uuid NOT NULL REFERENCES accounts, total numeric,
                     created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX orders_account_created ON orders (account_id, created_at DESC);
ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY accounts_own ON accounts FOR SELECT TO {role} USING (id = (select auth.uid()));
CREATE POLICY orders_own ON orders TO {role} USING (account_id = (select auth.uid()))
  WITH CHECK (account_id = (select auth.uid()));
GRANT USAGE ON SCHEMA auth TO {role};
GRANT SELECT ON accounts, orders TO {role};
"""]


# --- a clean schema ---------------------------------------------------------------------------


async def test_a_clean_schema_gives_no_findings_and_nothing_to_drop(
        database: str, app_role: str) -> None:
    execute(database, *clean_schema(app_role))
    assert await run_lint(database, app_role, min_age=0) == []
    assert await run_lint(database, None, min_age=0) == []
    # the only index serving orders' foreign key is never "unused", even with no scans
    assert await run_cleanup(database, min_age=0) == []


async def test_lint_reads_the_catalog_in_a_few_queries_whatever_the_number_of_tables(
        database: str) -> None:
    execute(database, "CREATE TABLE parent (id int PRIMARY KEY)", """
DO $$ BEGIN
  FOR n IN 1..60 LOOP
    EXECUTE format('CREATE TABLE child_%s (id int PRIMARY KEY, parent_id int REFERENCES parent,
                    v int)', n);
    EXECUTE format('CREATE INDEX ON child_%s (v)', n);
  END LOOP;
END $$""")
    findings = await run_lint(database)
    assert len(of(findings, "unindexed_fk")) == 60
    with psycopg.connect(database) as conn:
        calls = conn.execute(
            "SELECT sum(calls) FROM pg_stat_statements WHERE query LIKE %s AND dbid = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
            (f"%{MARK}%",)).fetchone()
    assert calls is not None and 1 <= calls[0] <= 5


# --- indexes ----------------------------------------------------------------------------------


async def test_unindexed_foreign_key_fires_and_its_fix_silences_it(database: str) -> None:
    execute(database, """
CREATE TABLE parent (id int PRIMARY KEY, a int, b int, UNIQUE (a, b));
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent, other int,
                    pa int, pb int, FOREIGN KEY (pa, pb) REFERENCES parent (a, b));
CREATE INDEX child_other_parent ON child (other, parent_id);
CREATE INDEX child_parent_partial ON child (parent_id) WHERE other > 0;
CREATE INDEX child_pb_pa ON child (pb, pa, other);
""")
    found = of(await run_lint(database), "unindexed_fk")
    # neither a non-leading column nor a partial index serves a foreign key; (pb, pa) does
    assert [(f.table, f.fix) for f in found] == [(
        "public.child",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_child_parent_id ON public.child "
        "(parent_id);")]
    assert "child_parent_id_fkey (parent_id) → public.parent (id)" in found[0].detail

    execute(database, found[0].fix)
    assert of(await run_lint(database), "unindexed_fk") == []


async def test_duplicates_and_prefixes_never_drop_a_primary_key_or_unique_constraint(
        database: str) -> None:
    execute(database, """
CREATE TABLE t (id int PRIMARY KEY, email text UNIQUE, a int, b int, c int);
CREATE INDEX idx_t_id ON t (id);
CREATE INDEX t_id_a ON t (id, a);
CREATE INDEX idx_t_email ON t (email);
CREATE UNIQUE INDEX t_email_uidx ON t (email);
CREATE INDEX t_a ON t (a);
CREATE INDEX t_a_b ON t (a, b);
CREATE INDEX t_a_b_partial ON t (a, b) WHERE c > 0;
CREATE INDEX t_a_desc ON t (a DESC, c);
CREATE UNIQUE INDEX t_b_uniq ON t (b);
CREATE INDEX t_b_c ON t (b, c);
""")
    found = of(await run_lint(database, min_age=7), "duplicate_index")
    expected = {"idx_t_id", "idx_t_email", "t_email_uidx", "t_a"}
    assert dropped([f.fix for f in found]) == expected
    proposals = await run_cleanup(database, min_age=7)
    assert {p["index"] for p in proposals} == expected
    assert dropped([p["sql"] for p in proposals]) == expected
    everything = json.dumps([f.as_dict() for f in found] + proposals)
    for protected in ("t_pkey", "t_email_key", "t_b_uniq"):
        assert f'"{protected}"' not in everything  # named in a reason maybe, never dropped
    by_index = {p["index"]: p for p in proposals}
    assert "duplicates t_email_key" in by_index["idx_t_email"]["reason"]
    assert "is a prefix of t_a_b" in by_index["t_a"]["reason"]

    for proposal in proposals:  # every proposal runs as written and leaves the keepers
        execute(database, proposal["sql"])
    with psycopg.connect(database) as conn:
        left = {r[0] for r in conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 't'::regclass")}
    assert left == {"t_pkey", "t_email_key", "t_id_a", "t_a_b", "t_a_b_partial", "t_a_desc",
                    "t_b_uniq", "t_b_c"}
    assert of(await run_lint(database, min_age=7), "duplicate_index") == []


async def test_a_deduplicated_prefix_is_kept_beside_the_wider_index(database: str) -> None:
    """`(status)` over four values keeps one entry per value and page, a fraction of
    `(status, created_at)`'s size, and a count over a common status reads that many fewer
    pages: it is no redundant prefix. `(account_id)`, as wide as what it leads, is."""
    execute(database, """
CREATE TABLE t AS SELECT g AS id, (ARRAY['open', 'closed', 'pending', 'failed'])[1 + g % 4]
    AS status, g AS account_id, g % 7 AS kind,
    timestamptz '2025-01-01' + g * interval '1 minute' AS created_at
FROM generate_series(1, 20000) AS g;
CREATE INDEX t_status ON t (status);
CREATE INDEX t_status_created ON t (status, created_at);
CREATE INDEX t_account ON t (account_id);
CREATE INDEX t_account_kind ON t (account_id, kind);
ANALYZE t;
""")
    with psycopg.connect(database) as conn:
        sizes = dict(conn.execute("SELECT relname, pg_relation_size(oid) FROM pg_class "
                                  "WHERE relname LIKE 't\\_%' AND relkind = 'i'").fetchall())
    assert sizes["t_status"] * 2 < sizes["t_status_created"]
    found = of(await run_lint(database, min_age=7), "duplicate_index")
    assert dropped([f.fix for f in found]) == {"t_account"}
    assert {p["index"] for p in await run_cleanup(database, min_age=7)} == {"t_account"}


async def test_cleanup_sql_quotes_a_mixed_case_index_and_runs(database: str) -> None:
    execute(database, """
CREATE TABLE "Docs" (id int PRIMARY KEY, owner int, created timestamptz);
CREATE INDEX "ByOwner" ON "Docs" (owner);
CREATE INDEX docs_owner_created ON "Docs" (owner, created);
INSERT INTO "Docs" SELECT n, n % 10, now() FROM generate_series(1, 500) AS n;
""")
    [proposal] = await run_cleanup(database, min_age=7)
    assert proposal["sql"] == 'DROP INDEX CONCURRENTLY IF EXISTS "public"."ByOwner"'
    assert dropped([proposal["sql"]]) == {"ByOwner"}
    assert proposal["action"] == "drop"
    assert proposal["table"] == "public.Docs" and proposal["index"] == "ByOwner"
    assert proposal["size_bytes"] > 0
    assert "ByOwner (owner) is a prefix of docs_owner_created" in proposal["reason"]
    assert re.fullmatch(r"[\d,]+ writes since .+ each also updated this index \(.+\)",
                        proposal["write_cost"])

    execute(database, proposal["sql"])
    with psycopg.connect(database) as conn:
        assert conn.execute("""SELECT to_regclass('public."ByOwner"')""").fetchone() == (None,)


async def test_unused_index_respects_the_age_of_the_statistics(database: str) -> None:
    execute(database, """
CREATE TABLE u (id int PRIMARY KEY, a int, b int);
CREATE INDEX u_a ON u (a);
CREATE INDEX u_b ON u (b);
INSERT INTO u SELECT n, n, n FROM generate_series(1, 2000) AS n;
ANALYZE u;
""")
    notes: list[str] = []
    # the throwaway cluster started minutes ago: a week of statistics does not exist yet
    assert of(await run_lint(database, min_age=7, notes=notes), "unused_index") == []
    assert any("unused indexes are not reported yet" in n and "7 days" in n for n in notes)
    assert await run_cleanup(database, min_age=7) == []

    found = of(await run_lint(database, min_age=0), "unused_index")
    assert {f.fix for f in found} == {'DROP INDEX CONCURRENTLY IF EXISTS "public"."u_a";',
                                      'DROP INDEX CONCURRENTLY IF EXISTS "public"."u_b";'}
    assert all("of statistics (since the server start" in f.detail for f in found)

    with psycopg.connect(database) as conn:  # use u_a once; its statistics arrive at exit
        conn.execute("SET enable_seqscan = off")
        conn.execute("SELECT * FROM u WHERE a = 7").fetchall()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = of(await run_lint(database, min_age=0), "unused_index")
        if len(found) == 1:
            break
        time.sleep(0.2)
    assert [f.fix for f in found] == ['DROP INDEX CONCURRENTLY IF EXISTS "public"."u_b";']


async def test_no_primary_key_proposes_promoting_a_unique_not_null_index(database: str) -> None:
    execute(database, """
CREATE TABLE events (id bigint NOT NULL, body text);
CREATE UNIQUE INDEX events_id ON events (id);
CREATE TABLE raw_log (line text);
""")
    found = {f.table: f for f in of(await run_lint(database), "no_primary_key")}
    assert set(found) == {"public.events", "public.raw_log"}
    assert found["public.events"].fix == (
        'ALTER TABLE "public"."events" ADD PRIMARY KEY USING INDEX "events_id";')
    assert found["public.raw_log"].fix.startswith(
        'ALTER TABLE "public"."raw_log" ADD PRIMARY KEY (')

    execute(database, found["public.events"].fix)
    assert [f.table for f in of(await run_lint(database), "no_primary_key")] == [
        "public.raw_log"]


# --- row level security -----------------------------------------------------------------------


async def test_rls_disabled_fires_only_for_tables_the_app_role_can_read(
        database: str, app_role: str) -> None:
    execute(database, f"""
CREATE TABLE open_table (id int PRIMARY KEY);
CREATE TABLE private_table (id int PRIMARY KEY);
CREATE TABLE guarded (id int PRIMARY KEY);
CREATE TABLE one_column (id int PRIMARY KEY, secret text);
ALTER TABLE guarded ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON open_table, guarded TO {app_role};
GRANT SELECT (id) ON one_column TO {app_role};
""")
    found = of(await run_lint(database, app_role), "rls_disabled")
    assert [f.table for f in found] == ["public.one_column", "public.open_table"]
    assert app_role in found[1].detail
    assert found[1].fix.startswith('ALTER TABLE "public"."open_table" ENABLE ROW LEVEL SECURITY;')

    notes: list[str] = []
    assert of(await run_lint(database, "no_such_role_here", notes=notes), "rls_disabled") == []
    assert any("no_such_role_here" in n and "does not exist" in n for n in notes)


async def test_rls_disabled_checks_every_role_the_api_exposes(
        pg: Cluster, database: str, app_role: str) -> None:
    """With HOTDATA_APP_ROLE set (Supabase's advice: authenticated), a table `anon` can read
    without RLS is still found, and the finding says it is `anon`."""
    execute(pg.dsn(), "CREATE ROLE anon NOLOGIN")
    try:
        execute(database, "CREATE TABLE leaky (id int PRIMARY KEY); GRANT SELECT ON leaky TO anon",
                "INSERT INTO leaky SELECT generate_series(1, 3)")
        with psycopg.connect(database, autocommit=True) as conn:  # its backend's stats flushed
            deadline = time.monotonic() + 30
            while conn.execute("SELECT n_live_tup FROM pg_stat_user_tables "
                               "WHERE relname = 'leaky'").fetchone() != (3,):
                assert time.monotonic() < deadline, "the insert never reached the statistics"
                conn.execute("SELECT pg_stat_clear_snapshot()")
                time.sleep(0.05)
        [found] = of(await run_lint(database, app_role), "rls_disabled")
        assert found.table == "public.leaky"
        assert "anon can SELECT it" in found.detail
        # never analysed: the rows the statistics counted, not ~0
        assert "every one of its ~3 rows" in found.detail, found.detail
    finally:
        execute(database, "DROP OWNED BY anon")
        execute(pg.dsn(), "DROP ROLE anon")


async def test_rls_per_row_call_fires_for_unwrapped_calls_and_its_fix_silences_it(
        database: str, app_role: str) -> None:
    execute(database, AUTH, f"""
CREATE TABLE notes (id int PRIMARY KEY, owner uuid, tenant text);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY notes_own ON notes FOR SELECT TO {app_role} USING (owner = auth.uid());
CREATE POLICY notes_tenant ON notes FOR INSERT TO {app_role}
  WITH CHECK (tenant = current_setting('app.tenant', true));
CREATE TABLE wrapped (id int PRIMARY KEY, owner uuid);
ALTER TABLE wrapped ENABLE ROW LEVEL SECURITY;
CREATE POLICY wrapped_own ON wrapped TO {app_role} USING (owner = (select auth.uid()));
""")
    found = {f.fix.split('"')[1]: f for f in of(await run_lint(database), "rls_per_row_call")}
    assert set(found) == {"notes_own", "notes_tenant"}
    assert all(f.table == "public.notes" for f in found.values())
    assert "auth.uid()" in found["notes_own"].detail
    assert found["notes_own"].fix == (
        'ALTER POLICY "notes_own" ON "public"."notes" USING (owner = (SELECT auth.uid()));')
    assert found["notes_tenant"].fix.startswith(
        'ALTER POLICY "notes_tenant" ON "public"."notes" WITH CHECK (')

    execute(database, *(f.fix for f in found.values()))
    assert of(await run_lint(database), "rls_per_row_call") == []


async def test_multiple_permissive_policies_for_one_role_and_command(
        database: str, app_role: str) -> None:
    execute(database, f"""
CREATE TABLE docs (id int PRIMARY KEY, owner text, team text, public boolean);
ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
CREATE POLICY docs_own ON docs FOR SELECT TO {app_role} USING (owner = current_user);
CREATE POLICY docs_team ON docs TO {app_role} USING (team = 'a');
CREATE TABLE calm (id int PRIMARY KEY, owner text);
ALTER TABLE calm ENABLE ROW LEVEL SECURITY;
CREATE POLICY calm_read ON calm FOR SELECT TO {app_role} USING (owner = current_user);
CREATE POLICY calm_write ON calm FOR INSERT TO {app_role} WITH CHECK (owner = current_user);
CREATE POLICY calm_not_deleted ON calm AS RESTRICTIVE FOR SELECT TO {app_role}
  USING (owner IS NOT NULL);
""")
    [finding] = of(await run_lint(database, app_role), "multiple_permissive_policies")
    assert finding.table == "public.docs"
    assert "docs_own, docs_team" in finding.detail
    assert f"{app_role} SELECT" in finding.detail
    assert "INSERT" not in finding.detail  # docs_own is for SELECT only
    assert "USING ((owner = CURRENT_USER) OR (team = CAST('a' AS text)))" in finding.fix


# --- the HotDash sample -----------------------------------------------------------------------


async def test_hotdash_foreign_keys_and_policies(hotdash: str) -> None:
    findings = await run_lint(hotdash, None)
    unindexed = {(f.table, f.detail.split(" (")[0]) for f in of(findings, "unindexed_fk")}
    assert {t for t, _ in unindexed} == {
        "public.notifications", "public.decision_log", "public.inventory_actions",
        "public.user_preferences", "public.sales_pulse_actions"}
    assert len(unindexed) == 6  # inventory_actions has two
    [notifications_fk] = [f for f in of(findings, "unindexed_fk")
                          if f.table == "public.notifications"]
    assert "(user_id) → public.profiles (id)" in notifications_fk.detail
    assert notifications_fk.fix == ("CREATE INDEX CONCURRENTLY IF NOT EXISTS "
                                    "idx_notifications_user_id ON public.notifications (user_id);")

    per_row = of(findings, "rls_per_row_call")
    assert [f.table for f in per_row] == ["public.notifications"]  # not decision_log's
    assert "notifications_select_own" in per_row[0].detail
    # authenticated may read the five tables without row level security
    assert {f.table for f in of(findings, "rls_disabled")} == {
        "public.profiles", "public.products", "public.inventory_actions",
        "public.user_preferences", "public.sales_pulse_actions"}
    assert of(findings, "no_primary_key") == [] and of(findings, "duplicate_index") == []


# --- output -----------------------------------------------------------------------------------


def test_cli_lint_json_shape_and_exit_code(tmp_path: Path, database: str) -> None:
    execute(database, """
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent, v int);
CREATE INDEX child_v ON child (v);
CREATE INDEX child_v_again ON child (v);
CREATE TABLE heap (line text);
""")
    result = hotdata(tmp_path, "lint", "--dsn", database, "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["database"] == database
    assert {f["kind"] for f in report["findings"]} == {
        "unindexed_fk", "no_primary_key", "duplicate_index"}
    assert all(set(f) == {"kind", "table", "detail", "fix"} for f in report["findings"])
    [proposal] = report["cleanup"]
    assert proposal["index"] in {"child_v", "child_v_again"}
    assert {"action", "table", "index", "sql", "size_bytes", "reason", "write_cost"} <= set(
        proposal)

    text = hotdata(tmp_path, "lint", "--dsn", database)
    assert text.returncode == 0 and "no_primary_key" in text.stdout
    markdown = hotdata(tmp_path, "lint", "--dsn", database, "--format", "markdown")
    assert markdown.returncode == 0
    assert "## Foreign keys without an index (`unindexed_fk`): 1" in markdown.stdout


async def test_blocks_stay_within_slack_limits_and_say_how_many_more(
        database: str, settings: Settings) -> None:
    execute(database, "CREATE TABLE parent (id int PRIMARY KEY)", """
DO $$ BEGIN
  FOR n IN 1..120 LOOP
    EXECUTE format('CREATE TABLE heap_%s (parent_id int REFERENCES parent)', n);
  END LOOP;
END $$""")
    report = await lint.run(settings)
    assert len(of(report.findings, "unindexed_fk")) == 120
    assert len(of(report.findings, "no_primary_key")) == 120
    blocks = render_lint.blocks(report)
    assert len(blocks) <= 50
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert all(len(t) <= 3000 for t in texts)
    fk_section = next(t for t in texts if "(`unindexed_fk`): 120" in t)
    shown = fk_section.count("\n• ")
    assert 0 < shown < 120 and f"…and {120 - shown} more" in fk_section
    assert "hotdata lint --format markdown" in json.dumps(blocks)


# --- Slack ------------------------------------------------------------------------------------


def test_slash_lint_acks_then_answers_with_the_findings(hotdash_bot: BotUnderTest) -> None:
    reply = hotdash_bot.slash("lint")
    assert reply.status == 200
    assert reply.json()["response_type"] == "ephemeral"
    assert reply.text == "Checking the schema…"
    [response] = hotdash_bot.slack.wait_for(f"response_url/{reply.response_key}", timeout=30)
    params = response.params
    assert params["response_type"] == "ephemeral"
    assert params["text"].startswith("Schema lint: ")
    blocks = params["blocks"]
    assert len(blocks) <= 50
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert all(len(t) <= 3000 for t in texts)
    fk = next(t for t in texts if "(`unindexed_fk`): 6" in t)
    assert "idx_notifications_user_id ON public.notifications (user_id)" in fk
    per_row = next(t for t in texts if "(`rls_per_row_call`): 1" in t)
    assert "notifications_select_own" in per_row and "decision_log" not in per_row
    # nothing went to the channel: the answer is for the person who asked
    assert hotdash_bot.slack.answered("chat.postMessage") == []


def test_slash_lint_with_extra_words_gets_usage_and_runs_nothing(bot: BotUnderTest) -> None:
    reply = bot.slash("lint everything")
    assert reply.status == 200
    assert "`/hotdata lint` takes no arguments, got `everything`" in reply.text
    assert "/hotdata analyze [top N]" in reply.text
    time.sleep(0.3)
    assert not [c for c in bot.slack.calls if c.method.startswith("response_url/")]
