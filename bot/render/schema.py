"""Schema documentation and plan reviews as markdown, JSON and a short Slack summary."""

from __future__ import annotations

import json
from typing import Any

from bot.analysis.model import Finding
from bot.render.lint import TITLES as LINT_TITLES
from bot.render.modal import text_modal
from bot.schema.document import SchemaDoc, TableDoc, describe_policy, mermaid, rls_summary
from bot.schema.review import Review
from bot.units import size_text

MAX_TEXT = 3000
TITLES = {**LINT_TITLES,
          "vector_without_index": "Vector columns without an HNSW or IVFFlat index",
          "timestamp_without_time_zone": "Timestamps without time zone"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- one table --------------------------------------------------------------------------------


def table_dict(table: TableDoc) -> dict[str, Any]:
    facts = table.facts
    return {
        "table": table.qualified, "rows": facts.rows, "size_bytes": facts.size_bytes,
        "columns": [c.as_dict() for c in table.columns],
        "keys": table.keys,
        "foreign_keys": [{"name": fk.name, "columns": fk.columns, "references": fk.referenced,
                          "referenced_columns": fk.referenced_columns}
                         for fk in facts.foreign_keys],
        "indexes": [{"name": i.name, "method": i.method, "columns": i.columns,
                     "unique": i.unique, "primary": i.primary, "predicate": i.predicate,
                     "size_bytes": i.size_bytes, "scans": i.scans} for i in facts.indexes],
        "rls": {"enabled": facts.rls, "forced": table.force_rls, "summary": rls_summary(table)},
        "policies": [{"name": p.name, "command": p.command, "roles": p.roles,
                      "permissive": p.permissive, "using": p.qual, "with_check": p.with_check,
                      "description": describe_policy(p)} for p in facts.policies],
        "grants": table.grants,
        "lints": [f.as_dict() for f in table.lints],
    }


def table_markdown(table: TableDoc, level: str = "##") -> list[str]:
    facts = table.facts
    lines = [f"{level} {table.qualified}", "",
             f"~{facts.rows:,} rows, {size_text(facts.size_bytes)}.", "",
             "| column | type | null | default | key |", "|---|---|---|---|---|"]
    for c in table.columns:
        key = ", ".join(k for k, on in (("PK", "p" in c.keys), ("unique", "u" in c.keys)) if on)
        fks = [f"→ {fk.referenced}" for fk in facts.foreign_keys if c.name in fk.columns]
        lines.append(f"| {c.name} | {_cell(c.type)} | {'' if c.not_null else 'yes'} | "
                     f"{_cell(c.default or '')} | {', '.join([key, *fks]).strip(', ')} |")
    lines += ["", "**Keys:** " + ("; ".join(
        f"{k['type']} {k['name']} ({', '.join(k['columns'])})" for k in table.keys) or "none")]
    if facts.foreign_keys:
        lines.append("**Foreign keys:** " + "; ".join(
            f"{fk.name} ({', '.join(fk.columns)}) → {fk.referenced} "
            f"({', '.join(fk.referenced_columns)})" for fk in facts.foreign_keys))
    lines += ["", "| index | columns | size | scans |", "|---|---|---|---|"]
    for i in facts.indexes:
        kind = " (primary key)" if i.primary else " (unique)" if i.unique else ""
        where = f" WHERE {i.predicate}" if i.predicate else ""
        scans = "—" if i.scans is None else f"{i.scans:,}"
        lines.append(f"| {i.name}{kind} | {_cell(', '.join(i.columns) + where)} | "
                     f"{size_text(i.size_bytes)} | {scans} |")
    lines += ["", f"**Row level security:** {rls_summary(table)}."]
    lines += [f"- {_cell(describe_policy(p))}" for p in facts.policies]
    grants = "; ".join(f"{role}: {', '.join(p)}" for role, p in table.grants.items())
    lines += ["", f"**Grants to application roles:** {grants or 'none'}."]
    if table.lints:
        lines += ["", "**Lints:**"]
        lines += [f"- `{f.kind}`: {_cell(f.detail)} — fix: `{_cell(f.fix)}`"
                  for f in table.lints]
    return [*lines, ""]


# --- schema documentation -----------------------------------------------------------------------


def headline(doc: SchemaDoc) -> str:
    if not doc.tables:
        return f"Schema {doc.schema}: no tables (the schema is empty or does not exist)"
    lints = sum(len(t.lints) for t in doc.tables)
    fks = sum(len(t.facts.foreign_keys) for t in doc.tables)
    return (f"Schema {doc.schema}: {len(doc.tables)} tables, {fks} foreign keys, "
            f"{lints} lint finding{'s' * (lints != 1)}")


def as_dict(doc: SchemaDoc) -> dict[str, Any]:
    return {"database": doc.database, "schema": doc.schema, "generated_at": doc.generated_at,
            "erd": mermaid(doc.schema, doc.tables), "notes": doc.notes,
            "tables": [table_dict(t) for t in doc.tables]}


def as_json(doc: SchemaDoc) -> str:
    return json.dumps(as_dict(doc), indent=2, default=str)


def markdown(doc: SchemaDoc) -> str:
    lines = [f"# Schema {doc.schema}", "",
             f"Database `{doc.database}`, read {doc.generated_at}. {headline(doc)}.", ""]
    lines += [f"> {note}" for note in doc.notes]
    lines += ["## ERD", "", "```mermaid", mermaid(doc.schema, doc.tables).rstrip(), "```", ""]
    for table in doc.tables:
        lines += table_markdown(table)
    return "\n".join(lines).rstrip() + "\n"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def summary(doc: SchemaDoc) -> str:
    """The ephemeral Slack summary: one line per table, within one text object."""
    lines = [f"*{_esc(headline(doc))}*"] + [f"> {_esc(n)}" for n in doc.notes if doc.tables]
    for table in doc.tables:
        facts = table.facts
        rls = ("RLS " + ("forced" if table.force_rls else "on") if facts.rls else "RLS off")
        line = (f"• *{_esc(table.name)}*: {len(table.columns)} columns, "
                f"{len(facts.indexes)} indexes, {rls}, {len(facts.policies)} policies")
        if table.lints:
            line += f", lints: {_esc(', '.join(sorted({f.kind for f in table.lints})))}"
        lines.append(line)
    text = "\n".join(lines)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def blocks(doc: SchemaDoc) -> list[dict[str, Any]]:
    return [{"type": "section", "text": {"type": "mrkdwn", "text": summary(doc)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _esc(
                f"{doc.database} · {doc.generated_at} · the ERD is posted in the channel; "
                "`hotdata schema --format markdown` prints the full document")[:MAX_TEXT]}]}]


# --- plan reviews -------------------------------------------------------------------------------


def review_dict(review: Review) -> dict[str, Any]:
    return {"plan": review.plan, "database": review.database, "status": review.status,
            "error": review.error, "new_tables": [t.qualified for t in review.new_tables],
            "new_foreign_keys": review.new_foreign_keys, "erd": review.erd,
            "findings": [f.as_dict() for f in review.findings], "squawk": review.squawk,
            "proposals": review.proposals, "files": review.files, "notes": review.notes,
            "tables": [table_dict(t) for t in review.new_tables]}


def review_json(review: Review) -> str:
    return json.dumps(review_dict(review), indent=2, default=str)


def _findings_md(findings: list[Finding]) -> list[str]:
    if not findings:
        return ["No lint finding on the plan's tables.", ""]
    lines = ["| lint | table | why it matters | fix |", "|---|---|---|---|"]
    lines += [f"| {TITLES.get(f.kind, f.kind)} (`{f.kind}`) | {f.table or '—'} | "
              f"{_cell(f.detail)} | `{_cell(f.fix)}` |" for f in findings]
    return [*lines, ""]


def review_markdown(review: Review) -> str:
    lines = [f"# Schema review: {review.plan}", "", f"Against `{review.database}` "
             "(on a scratch copy of its schema, rolled back and dropped).", ""]
    lines += [f"> {note}" for note in review.notes]
    if review.status != "ok":
        lines += [f"**{review.status.upper()}**: {review.error}", ""]
    if review.status == "ok":
        lines += ["## What the plan adds", "",
                  "Tables: " + (", ".join(t.qualified for t in review.new_tables) or "none"),
                  "", "Foreign keys: " + ("; ".join(
                      f"{fk['table']} ({', '.join(fk['columns'])}) → {fk['references']}"
                      for fk in review.new_foreign_keys) or "none"), "",
                  "```mermaid", review.erd.rstrip(), "```", ""]
    lines += ["## Lints", "", *_findings_md(review.findings), "## squawk", ""]
    lines += ([f"- `{s['rule']}` ({s['level']}): {_cell(s['message'])}" for s in review.squawk]
              or ["No squawk finding."])
    if review.proposals:
        lines += ["", "## Proposed first indexes and policies", ""]
        for table, statements in review.proposals.items():
            lines += [f"- {table}:"] + [f"  - `{s}`" for s in statements]
    if review.files:
        lines += ["", "## Files", ""] + [f"- {f}" for f in review.files]
    return "\n".join(lines).rstrip() + "\n"


def spec(review: Review) -> str:
    """database-schema-<name>.md: tables, ERD, RLS notes, index plan."""
    lines = [f"# Database schema: {review.plan}", "",
             "Written by `hotdata schema review` from the plan as PostgreSQL built it on a "
             "scratch copy of the live schema.", "", "## ERD", "", "```mermaid",
             review.erd.rstrip(), "```", "", "## Tables", ""]
    for table in review.new_tables:
        lines += table_markdown(table, "###")
    lines += ["## RLS notes", ""]
    for table in review.new_tables:
        lines.append(f"- {table.qualified}: {rls_summary(table)}.")
        lines += [f"  - {_cell(describe_policy(p))}" for p in table.facts.policies]
        lines += [f"  - proposed: `{s}`" for s in review.proposals.get(table.qualified, [])
                  if "POLICY" in s or "ROW LEVEL" in s]
    lines += ["", "## Index plan", ""]
    for table in review.new_tables:
        planned = [i.name for i in table.facts.indexes]
        proposed = [s for s in review.proposals.get(table.qualified, [])
                    if s.startswith("CREATE INDEX")]
        lines.append(f"- {table.qualified}: in the plan: {', '.join(planned) or 'none'}"
                     + "".join(f"; proposed: `{s}`" for s in proposed))
    lines += ["", "## Lints", "", *_findings_md(review.findings)]
    return "\n".join(lines).rstrip() + "\n"


REVIEW_CALLBACK = "hotdata_schema_review"


def review_modal(channel: str) -> dict[str, Any]:
    """The modal where a planned migration is pasted for review."""
    return text_modal(REVIEW_CALLBACK, channel, "Review a schema plan", "Review", "plan",
                      "Planned DDL (CREATE TABLE, CREATE INDEX, policies…)", 10, 3000)
