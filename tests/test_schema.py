"""`hotdata schema` (document the live schema) and `hotdata schema review PLAN.sql` (a plan
applied on a scratch copy of the schema, rolled back) on a real PostgreSQL with the HotDash
sample; the CLI and `/hotdata schema` through the signed Slack flow."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bot.analysis.model import Finding
from bot.flows.schema import review_plan
from bot.pgcluster import Cluster, client_tool, server_major
from bot.render import schema as render
from bot.schema import document
from bot.server import upgrade_state
from bot.settings import Settings
from bot.tools import conninfo_and_env
from tests.harness import BotUnderTest, drop
from tests.test_cli import hotdata

TABLES = {"profiles", "products", "notifications", "decision_log", "inventory_actions",
          "user_preferences", "sales_pulse_actions"}
FOREIGN_KEYS = {("notifications", "user_id", "profiles"), ("decision_log", "user_id", "profiles"),
                ("inventory_actions", "product_id", "products"),
                ("inventory_actions", "user_id", "profiles"),
                ("user_preferences", "user_id", "profiles"),
                ("sales_pulse_actions", "user_id", "profiles")}

# The growth and onboarding tables. Each {slot} holds a lint planted (PLANTED) or its fix (CLEAN).
GROWTH = """-- growth and onboarding
CREATE TABLE seo_audits (
  id bigint NOT NULL {seo_audits_key},
  url text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE seo_audits ENABLE ROW LEVEL SECURITY;

CREATE TABLE seo_rankings (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  product_id int NOT NULL REFERENCES products (id),
  keyword text NOT NULL,
  position int
);
{seo_rankings_index}
ALTER TABLE seo_rankings ENABLE ROW LEVEL SECURITY;

CREATE TABLE ad_campaigns (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES profiles (id),
  name text NOT NULL
);
CREATE INDEX idx_ad_campaigns_user_id ON ad_campaigns (user_id);
{ad_campaigns_rls}

CREATE TABLE ad_performance (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  campaign_id bigint NOT NULL REFERENCES ad_campaigns (id),
  user_id uuid NOT NULL REFERENCES profiles (id),
  clicks int NOT NULL DEFAULT 0
);
CREATE INDEX idx_ad_performance_campaign_id ON ad_performance (campaign_id);
CREATE INDEX idx_ad_performance_user_id ON ad_performance (user_id);
ALTER TABLE ad_performance ENABLE ROW LEVEL SECURITY;
CREATE POLICY ad_performance_own ON ad_performance FOR SELECT TO authenticated
  USING ({ad_performance_uid});

CREATE TABLE social_analytics (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES profiles (id),
  followers int,
  captured_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_social_analytics_user_id ON social_analytics (user_id);
ALTER TABLE social_analytics ENABLE ROW LEVEL SECURITY;
CREATE POLICY social_analytics_own ON social_analytics FOR SELECT TO authenticated
  USING (user_id = (select auth.uid()));

CREATE TABLE onboarding_progress (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES profiles (id),
  step text NOT NULL,
  completed_at {onboarding_type}
);
CREATE INDEX idx_onboarding_progress_user_id ON onboarding_progress (user_id);
ALTER TABLE onboarding_progress ENABLE ROW LEVEL SECURITY;
CREATE POLICY onboarding_progress_own ON onboarding_progress FOR SELECT TO authenticated
  USING (user_id = (select auth.uid()));

CREATE TABLE feature_tours (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES profiles (id),
  tour text NOT NULL,
  seen_at timestamptz
);
CREATE INDEX idx_feature_tours_user_id ON feature_tours (user_id);
ALTER TABLE feature_tours ENABLE ROW LEVEL SECURITY;
CREATE POLICY feature_tours_own ON feature_tours FOR SELECT TO authenticated
  USING (user_id = (select auth.uid()));

GRANT SELECT ON seo_audits, seo_rankings, ad_campaigns, ad_performance, social_analytics,
  onboarding_progress, feature_tours TO authenticated;
"""
PLANTED = {"seo_audits_key": "", "seo_rankings_index": "",
           "ad_campaigns_rls": "", "ad_performance_uid": "user_id = auth.uid()",
           "onboarding_type": "timestamp"}
CLEAN = {"seo_audits_key": "PRIMARY KEY",
         "seo_rankings_index": "CREATE INDEX idx_seo_rankings_product_id "
                               "ON seo_rankings (product_id);",
         "ad_campaigns_rls": "ALTER TABLE ad_campaigns ENABLE ROW LEVEL SECURITY;\n"
                             "CREATE POLICY ad_campaigns_own ON ad_campaigns FOR SELECT TO "
                             "authenticated USING (user_id = (select auth.uid()));",
         "ad_performance_uid": "user_id = (select auth.uid())",
         "onboarding_type": "timestamptz"}
NEW_TABLES = {"seo_audits", "seo_rankings", "ad_campaigns", "ad_performance", "social_analytics",
              "onboarding_progress", "feature_tours"}

FINGERPRINT_SQL = """
SELECT md5(string_agg(item, E'\\n' ORDER BY item)) FROM (
  SELECT format('%s.%s %s %s %s', n.nspname, c.relname, c.relkind, c.relrowsecurity,
                (SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod), ','
                                   ORDER BY a.attnum)
                 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                   AND NOT a.attisdropped)) AS item
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  UNION ALL SELECT format('con %s %s', conrelid::regclass, pg_get_constraintdef(oid))
  FROM pg_constraint WHERE connamespace <> 'pg_catalog'::regnamespace
  UNION ALL SELECT format('pol %s %s %s', polrelid::regclass, polname,
                          pg_get_expr(polqual, polrelid))
  FROM pg_policy
  UNION ALL SELECT format('acl %s %s', oid::regclass, relacl) FROM pg_class
  WHERE relacl IS NOT NULL AND relnamespace <> 'pg_catalog'::regnamespace
) AS items
"""


def fingerprint(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(FINGERPRINT_SQL).fetchone()
        assert row is not None and row[0]
        return row[0]


def review_databases(pg: Cluster) -> list[str]:
    with psycopg.connect(pg.dsn()) as conn:
        return [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'hotdata_review_%'")]


def of(findings: list[Finding], kind: str) -> list[Finding]:
    return [f for f in findings if f.kind == kind]


@pytest.fixture
def hotdash_settings(hotdash: str, settings: Settings) -> Settings:
    """Settings for the HotDash copy, its state schema upgraded (reviews record sandboxes)."""
    settings.database_url = hotdash
    asyncio.run(upgrade_state(settings))
    return settings


# --- documenting the live schema ------------------------------------------------------------------


async def test_erd_lists_every_table_and_foreign_key(hotdash_settings: Settings) -> None:
    doc = await document.run(hotdash_settings)
    assert {t.name for t in doc.tables} == TABLES
    source = document.mermaid(doc.schema, doc.tables)
    assert source.startswith("erDiagram\n")
    for table in TABLES:
        assert f"\n    {table} {{\n" in source
    relations = [line.strip() for line in source.splitlines() if "--o{" in line]
    assert len(relations) == len(FOREIGN_KEYS)
    for child, column, parent in FOREIGN_KEYS:
        nullable = (child, column) in {("inventory_actions", "user_id"),
                                       ("sales_pulse_actions", "user_id")}
        assert f'{parent} {"o|" if nullable else "||"}--o{{ {child} : "{column}"' in relations
    assert "        uuid id PK" in source and "        integer n UK" in source
    markdown = render.markdown(doc)
    assert "```mermaid\nerDiagram" in markdown
    drawn = await document.png(doc.schema, doc.tables)
    assert drawn.startswith(b"\x89PNG\r\n\x1a\n") and len(drawn) > 5000
    assert all(f'"public.{child}" -> "public.{parent}" [label="{column}"]'
               in document.dot(doc.schema, doc.tables) for child, column, parent in FOREIGN_KEYS)


async def test_rls_notes_describe_the_two_policies(hotdash_settings: Settings) -> None:
    doc = await document.run(hotdash_settings)
    notifications, decisions = doc.table("notifications"), doc.table("decision_log")
    assert notifications is not None and decisions is not None
    assert [document.describe_policy(p) for p in notifications.facts.policies] == [
        "notifications_select_own: authenticated may SELECT rows where user_id = auth.uid() "
        "— calls auth.uid() once per row"]
    [decision_policy] = decisions.facts.policies
    described = document.describe_policy(decision_policy)
    assert described == ("decision_log_own: authenticated may SELECT, INSERT, UPDATE and DELETE "
                         "rows where user_id = (SELECT auth.uid() AS uid)")
    assert notifications.facts.rls and not notifications.force_rls
    products = doc.table("products")
    assert products is not None and not products.facts.rls and not products.facts.policies
    assert document.rls_summary(products) == ("row level security disabled: authenticated can "
                                              "read every row")
    assert products.grants == {"authenticated": ["SELECT"]}
    assert [f.kind for f in products.lints] == ["rls_disabled"]
    assert {f.kind for f in notifications.lints} == {"rls_per_row_call", "unindexed_fk"}
    data = render.as_dict(doc)
    table = next(t for t in data["tables"] if t["table"] == "public.notifications")
    assert table["rls"] == {"enabled": True, "forced": False,
                            "summary": "row level security enabled"}
    assert table["indexes"][0]["name"] == "notifications_pkey"
    assert table["indexes"][0]["size_bytes"] > 0 and table["indexes"][0]["scans"] is not None


# --- reviewing a plan -----------------------------------------------------------------------------


async def test_growth_plan_gets_one_finding_per_planted_lint(
        pg: Cluster, hotdash: str, hotdash_settings: Settings, tmp_path: Path) -> None:
    before = fingerprint(hotdash)
    at = datetime(2026, 5, 1, 9, 30, tzinfo=UTC)
    result = await review_plan(hotdash_settings, GROWTH.format(**PLANTED), name="growth",
                                 out=tmp_path, at=at)
    assert result.status == "ok", result.error
    assert fingerprint(hotdash) == before
    assert review_databases(pg) == []
    assert {t.name for t in result.new_tables} == NEW_TABLES
    assert {(fk["table"], fk["references"]) for fk in result.new_foreign_keys} == {
        ("public.seo_rankings", "public.products"), ("public.ad_campaigns", "public.profiles"),
        ("public.ad_performance", "public.ad_campaigns"),
        ("public.ad_performance", "public.profiles"),
        ("public.social_analytics", "public.profiles"),
        ("public.onboarding_progress", "public.profiles"),
        ("public.feature_tours", "public.profiles")}
    assert sorted((f.kind, f.table) for f in result.findings) == sorted([
        ("no_primary_key", "public.seo_audits"), ("unindexed_fk", "public.seo_rankings"),
        ("rls_disabled", "public.ad_campaigns"), ("rls_per_row_call", "public.ad_performance"),
        ("timestamp_without_time_zone", "public.onboarding_progress")])
    assert "prefer-timestamp-tz" in {s["rule"] for s in result.squawk}
    assert result.proposals["public.seo_rankings"] == [
        "CREATE INDEX idx_seo_rankings_product_id ON public.seo_rankings (product_id);"]
    assert result.proposals["public.ad_campaigns"] == [
        'ALTER TABLE "public"."ad_campaigns" ENABLE ROW LEVEL SECURITY;',
        'CREATE POLICY "ad_campaigns_select_own" ON "public"."ad_campaigns" FOR SELECT TO '
        '"authenticated" USING (user_id = (select auth.uid()));']
    assert "public.feature_tours" not in result.proposals  # already has its policy and index
    assert "    ad_campaigns ||--o{ ad_performance : \"campaign_id\"" in result.erd
    stubs = sorted(tmp_path.glob("*.sql"))
    assert [p.name for p in stubs] == [
        "20260501093000_seo_audits.sql", "20260501093001_seo_rankings.sql",
        "20260501093002_ad_campaigns.sql", "20260501093003_ad_performance.sql",
        "20260501093004_social_analytics.sql", "20260501093005_onboarding_progress.sql",
        "20260501093006_feature_tours.sql"]
    spec = (tmp_path / "database-schema-growth.md").read_text()
    assert "```mermaid\nerDiagram" in spec and "## RLS notes" in spec and "## Index plan" in spec
    assert ("ad_performance_own: authenticated may SELECT rows where user_id = auth.uid() "
            "— calls auth.uid() once per row") in spec
    assert "idx_seo_rankings_product_id" in spec

    # The stubs apply cleanly, in order, on an empty copy of the schema.
    empty = "t_stubs_" + datetime.now(UTC).strftime("%H%M%S%f")
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(empty)))
    try:
        source, env = conninfo_and_env(hotdash)
        major = server_major(pg.bindir)  # pg_dump refuses a newer server
        psql = client_tool("psql", major)
        dumped = subprocess.run([client_tool("pg_dump", major), "--schema-only", "--no-owner",
                                 "--dbname", source],
                                env=env, capture_output=True, text=True, check=True)
        target, env = conninfo_and_env(pg.url(empty))
        subprocess.run([psql, "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "--dbname",
                        target], input=dumped.stdout, env=env, capture_output=True, text=True,
                       check=True)
        for stub in stubs:
            applied = subprocess.run([psql, "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1",
                                      "--single-transaction", "--dbname", target, "--file",
                                      str(stub)], env=env, capture_output=True, text=True)
            assert applied.returncode == 0, (stub.name, applied.stderr)
        with psycopg.connect(pg.dsn(empty)) as conn:
            names = {r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'r' "
                                                "AND relnamespace = 'public'::regnamespace")}
            policies = {r[0] for r in conn.execute("SELECT polname FROM pg_policy")}
        assert names >= NEW_TABLES
        assert "ad_campaigns_select_own" in policies
    finally:
        drop(pg, empty)


async def test_clean_plan_gets_no_finding(hotdash_settings: Settings, tmp_path: Path) -> None:
    result = await review_plan(hotdash_settings, GROWTH.format(**CLEAN), name="clean",
                                 out=tmp_path)
    assert result.status == "ok", result.error
    assert {t.name for t in result.new_tables} == NEW_TABLES
    assert result.findings == []
    assert "No lint finding on the plan's tables." in render.review_markdown(result)


@pytest.mark.parametrize("statement, refusal", [
    ("DELETE FROM notifications WHERE read;", "line 3: DELETE is not a schema definition"),
    ("DROP TABLE user_preferences;", "line 3: DROP TABLE removes objects"),
    ("TRUNCATE decision_log;", "line 3: TRUNCATE is not a schema definition"),
])
async def test_data_changes_and_drops_are_refused_before_anything_runs(
        pg: Cluster, hotdash: str, hotdash_settings: Settings, tmp_path: Path,
        statement: str, refusal: str) -> None:
    before = fingerprint(hotdash)
    plan = "CREATE TABLE t1 (id int PRIMARY KEY);\n\n" + statement + "\n"
    result = await review_plan(hotdash_settings, plan, out=tmp_path)
    assert result.status == "refused"
    assert result.error is not None and result.error.startswith(refusal)
    assert "Nothing was run" in result.error
    assert result.new_tables == [] and list(tmp_path.iterdir()) == []
    assert fingerprint(hotdash) == before and review_databases(pg) == []


async def test_bad_ddl_gets_the_postgresql_error_with_its_line(
        pg: Cluster, hotdash: str, hotdash_settings: Settings, tmp_path: Path) -> None:
    before = fingerprint(hotdash)
    syntax = await review_plan(hotdash_settings, "CREATE TABLE a (id int);\nCREATE TABL b ();",
                                 out=tmp_path)
    assert syntax.status == "failed"
    assert syntax.error == 'line 2: syntax error at or near "TABL"'
    # pgvector is not installed on the test cluster: the DDL fails to apply; the vector lint
    # still comes from the DDL itself.
    plan = ("CREATE TABLE chunks (\n  id bigint PRIMARY KEY,\n  body text,\n"
            "  embedding vector(3)\n);\nCREATE INDEX ON chunks (body);\n")
    vector = await review_plan(hotdash_settings, plan, out=tmp_path)
    assert vector.status == "failed"
    assert vector.error == 'line 4: type "vector" does not exist'
    assert [(f.kind, f.table) for f in vector.findings] == [("vector_without_index", "chunks")]
    assert "USING hnsw (embedding" in vector.findings[0].fix
    missing = await review_plan(hotdash_settings,
                                  "CREATE TABLE ok (id int PRIMARY KEY);\n"
                                  "CREATE INDEX ON nowhere (id);\n", out=tmp_path)
    assert missing.status == "failed"
    assert missing.error == 'line 2: relation "nowhere" does not exist'
    assert list(tmp_path.iterdir()) == []
    assert fingerprint(hotdash) == before and review_databases(pg) == []


# --- the CLI and Slack ----------------------------------------------------------------------------


def test_cli_schema_and_review(hotdash: str, tmp_path: Path) -> None:
    documented = hotdata(tmp_path, "schema", "--dsn", hotdash, "--format", "json")
    assert documented.returncode == 0, documented.stderr
    data = json.loads(documented.stdout)
    assert {t["table"] for t in data["tables"]} == {f"public.{t}" for t in TABLES}
    assert data["erd"].startswith("erDiagram")
    markdown = hotdata(tmp_path, "schema", "public", "--dsn", hotdash, "--format", "markdown")
    assert markdown.returncode == 0 and "## public.notifications" in markdown.stdout
    plan = tmp_path / "growth.sql"
    plan.write_text(GROWTH.format(**PLANTED))
    out = tmp_path / "out"
    reviewed = hotdata(tmp_path, "schema", "review", str(plan), "--out", str(out), "--dsn",
                       hotdash, "--format", "json")
    assert reviewed.returncode == 0, reviewed.stderr
    found = json.loads(reviewed.stdout)
    assert found["status"] == "ok" and len(found["findings"]) == 5
    assert (out / "database-schema-growth.md").exists() and len(list(out.glob("*.sql"))) == 7
    plan.write_text("DROP TABLE profiles;\n")
    refused = hotdata(tmp_path, "schema", "review", str(plan), "--dsn", hotdash)
    assert refused.returncode == 2
    assert "line 1: DROP TABLE removes objects" in refused.stdout


def test_slash_schema_posts_the_erd_and_a_summary(hotdash_bot: BotUnderTest) -> None:
    reply = hotdash_bot.slash("schema", channel="C0GROWTH")
    assert reply.status == 200
    assert reply.json()["response_type"] == "ephemeral"
    assert reply.text == "Documenting schema public; the ERD will appear in this channel."
    [response] = hotdash_bot.slack.wait_for(f"response_url/{reply.response_key}", timeout=30)
    assert response.params["response_type"] == "ephemeral"
    assert response.params["text"].startswith("Schema public: 7 tables, 6 foreign keys")
    assert "*notifications*: 6 columns, 1 indexes, RLS on, 1 policies" in (
        response.params["blocks"][0]["text"]["text"])
    [upload] = hotdash_bot.slack.wait_for("files.completeUploadExternal", timeout=30)
    assert upload.params["channel_id"] == "C0GROWTH"
    [png] = hotdash_bot.slack.uploads.values()
    assert png.startswith(b"\x89PNG")


def test_slash_schema_rejects_a_bad_name(hotdash_bot: BotUnderTest) -> None:
    reply = hotdash_bot.slash("schema public extra")
    assert "`/hotdata schema` takes one schema name" in reply.text
    reply = hotdash_bot.slash("schema nowhere")
    [response] = hotdash_bot.slack.wait_for(f"response_url/{reply.response_key}", timeout=30)
    assert response.params["text"] == ("Schema nowhere: no tables (the schema is empty or "
                                       "does not exist)")
    assert not hotdash_bot.slack.answered("files.completeUploadExternal")


def test_slash_schema_review_takes_a_pasted_plan(hotdash_bot: BotUnderTest) -> None:
    reply = hotdash_bot.slash("schema review", channel="C0GROWTH")
    assert reply.status == 200
    [opened] = hotdash_bot.slack.wait_for("views.open", timeout=10)
    view = opened.params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert view["callback_id"] == "hotdata_schema_review"
    assert view["private_metadata"] == "C0GROWTH"
    plan = ("CREATE TABLE feature_tours (user_id uuid REFERENCES profiles (id), "
            "step int, seen_at timestamp);\n")
    assert hotdash_bot.requests is not None
    submitted = hotdash_bot.requests.submit_view(
        "hotdata_schema_review", {"plan": {"plan": {"type": "plain_text_input",
                                                    "value": plan}}},
        private_metadata="C0GROWTH")
    assert submitted.status == 200
    [posted] = hotdash_bot.slack.wait_for("chat.postMessage", timeout=60)
    assert posted.params["channel"] == "C0GROWTH"
    assert "schema plan reviewed" in posted.params["text"]
    [done] = hotdash_bot.slack.wait_for("files.completeUploadExternal", timeout=30)
    assert done.params["thread_ts"]
    [spec] = hotdash_bot.slack.uploads.values()
    text = spec.decode()
    assert "feature_tours" in text
    assert "no_primary_key" in text and "timestamp_without_time_zone" in text
    with psycopg.connect(hotdash_bot.settings.database_url) as conn:  # never on the target
        assert conn.execute("SELECT to_regclass('public.feature_tours')").fetchone() == (None,)
