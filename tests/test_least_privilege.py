"""The least-privilege roles the README gives for Supabase, run as Supabase's `postgres`, and the
note an analysis carries when hotdata's own (owner) plans ran under row level security."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from rich.console import Console

from bot import pgcluster
from bot.advisor.pipeline import analyze
from bot.analysis.model import Analysis
from bot.analysis.plan import walk
from bot.render import analysis as render
from bot.sample import hotdash
from tests.harness import advised_env, settings_for, watched_file
from tests.test_cli import assert_hypopg_reported, hotdata

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- supabase-roles:begin -->", "<!-- supabase-roles:end -->"
PASSWORD = "least-Pa55"
NOTE = "owner plans ran under row level security as hotdata_ro (no BYPASSRLS)"
# HotDash's heaviest user (profile n = 0), as the application would see it.
CLAIMS = json.dumps({"sub": str(uuid.UUID(hashlib.md5(b"u0").hexdigest())),
                     "role": "authenticated"})
COUNT_UNREAD = {"name": "unread count",
                "sql": "SELECT count(*) FROM notifications WHERE read = false"}


def documented_sql(document: str) -> str:
    """The SQL between the Supabase-roles markers of `document` (a file at the repository's
    root), without its fence."""
    text = (ROOT / document).read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, document
    block = text.split(BEGIN)[1].split(END)[0].strip()
    assert block.startswith("```sql\n") and block.endswith("\n```"), document
    return block.removeprefix("```sql\n").removesuffix("```")


@pytest.fixture
def readme_roles(supabase_pg: pgcluster.Cluster, supabase_db: str) -> Iterator[dict[str, str]]:
    """README's Supabase roles SQL run as `postgres` on a fresh Supabase-shaped database, its
    password placeholders filled in and the project's database (`postgres`) named as this one;
    each role's URL (`postgres` too). The roles are dropped afterwards: they are cluster-wide."""
    dbname = supabase_db.rsplit("/", 1)[1]
    script = (documented_sql("README.md").replace("'…'", f"'{PASSWORD}'")
              .replace("DATABASE postgres", f'DATABASE "{dbname}"'))
    roles = re.findall(r"CREATE ROLE (\w+)", script)
    assert roles == ["hotdata_ro", "hotdata_state"]
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        conn.execute(script)
    try:
        yield {"postgres": supabase_db,
               **{role: supabase_pg.url(dbname, role, PASSWORD) for role in roles}}
    finally:
        with psycopg.connect(supabase_pg.dsn(dbname), autocommit=True) as conn:
            for role in roles:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_readme_and_security_give_the_same_supabase_roles() -> None:
    assert documented_sql("README.md") == documented_sql("SECURITY.md")


def test_the_readme_supabase_roles_serve_doctor_and_analyze(
        readme_roles: dict[str, str], tmp_path: Path) -> None:
    watched = tmp_path / "watched.toml"
    watched.write_text(hotdash.watched_queries_toml())
    env = {"HOTDATA_DATABASE_URL": readme_roles["hotdata_ro"],
           "HOTDATA_STATE_DATABASE_URL": readme_roles["hotdata_state"],
           "HOTDATA_MIGRATOR_DATABASE_URL": readme_roles["postgres"],
           "HOTDATA_APP_ROLE": "authenticated", "HOTDATA_APP_JWT_CLAIMS": CLAIMS,
           "HOTDATA_WATCHED_QUERIES": str(watched),
           **advised_env(readme_roles["postgres"])}  # without HypoPG: a copy to build on

    upgrade = hotdata(tmp_path, "db", "upgrade", **env)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    doctor = hotdata(tmp_path, "doctor", "--format", "json", **env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert "connected as hotdata_ro, read-only" in checks["target database"]["detail"]
    for name in ("analysis role", "pg_stat_statements", "state schema"):
        assert checks[name]["state"] == "ok", checks[name]
    assert_hypopg_reported(checks["hypopg"], readme_roles["hotdata_ro"])

    analysis = hotdata(tmp_path, "analyze", "--format", "json", **env)
    assert analysis.returncode == 0, analysis.stdout + analysis.stderr
    report = json.loads(analysis.stdout)
    assert len(report["queries"]) == len(hotdash.TILES)
    assert [q["error"] for q in report["queries"]] == [None] * len(hotdash.TILES)
    app_runs = [r for q in report["queries"] for r in q["runs"] if r["role"] == "app"]
    assert app_runs and all(r["analyzed"] and r["error"] is None for r in app_runs)
    assert report["recommendations"], "no candidate costed (HypoPG, or built on the copy)"
    # The README's roles give hotdata_ro no BYPASSRLS (before 16 only a superuser may): said.
    assert report["owner_plans_under_rls"] == {
        "role": "hotdata_ro", "tables": ["public.decision_log", "public.notifications"]}
    assert report["notes"][0].startswith(NOTE)


async def test_owner_plans_under_rls_carry_a_note_unless_the_role_bypasses_it(
        readme_roles: dict[str, str], tmp_path: Path) -> None:
    watched = watched_file(tmp_path, [COUNT_UNREAD])

    def owner_scan_rows(result: Analysis) -> int:
        owner = next(r for r in result.results[0].runs if r.role == "owner")
        assert owner.plan is not None
        return sum(n["Actual Rows"] for n in walk(owner.plan["Plan"])
                   if n.get("Relation Name") == "notifications")

    limited = await analyze(settings_for(readme_roles["hotdata_ro"], watched_queries=watched,
                                         app_role="authenticated", app_jwt_claims=CLAIMS))
    assert owner_scan_rows(limited) == 0  # the policies hide every row from hotdata_ro
    assert render.as_dict(limited)["owner_plans_under_rls"] == {
        "role": "hotdata_ro", "tables": ["public.notifications"]}
    note = limited.notes[0]
    assert note == (f"{NOTE} on public.notifications: rows hidden by policies were not "
                    "counted, so those plans, their findings and the recommendations may "
                    "differ from a role that sees every row; use a role with BYPASSRLS for "
                    "owner plans")
    console = Console(record=True, width=400)
    render.print_text(limited, console)
    blocks = json.dumps(render.blocks(limited), ensure_ascii=False)
    for shown in (console.export_text(), render.markdown(limited), blocks):
        assert note in shown

    full = await analyze(settings_for(readme_roles["postgres"], watched_queries=watched,
                                      app_role="authenticated", app_jwt_claims=CLAIMS))
    assert owner_scan_rows(full) > 0  # postgres has BYPASSRLS
    assert full.owner_rls is None
    assert render.as_dict(full)["owner_plans_under_rls"] is None
    assert not any("row level security" in n for n in full.notes)
