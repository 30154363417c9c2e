"""An analysis as JSON (the `analyze` shape: `as_dict`, listed in ARCHITECTURE.md), markdown
(the uploaded report), Block Kit and text."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from bot.analysis.model import Analysis, PlanRun, QueryResult
from bot.render.proposals import PROPOSE

if TYPE_CHECKING:  # rich only for the terminal: JSON and markdown callers skip its import
    from rich.console import Console

MAX_BLOCKS = 50
MAX_TEXT = 3000
QUERY_PREVIEW = 300


def filename(analysis: Analysis) -> str:
    return f"query-performance-analysis-{analysis.collected_at[:10]}.md"


def _query_dict(result: QueryResult) -> dict[str, Any]:
    s = result.statement
    return {
        "queryid": s.queryid, "query": s.query, "source": s.source, "name": s.name,
        "calls": s.calls, "total_ms": round(s.total_ms, 3), "mean_ms": round(s.mean_ms, 3),
        "rows": s.rows, "shared_blks_hit": s.shared_blks_hit,
        "shared_blks_read": s.shared_blks_read, "temp_blks_written": s.temp_blks_written,
        "plan_summary": result.plan_summary,
        "app_plan_differs": result.app_plan_differs,
        "app_plan_summary": result.app_plan_summary,
        "findings": [f.as_dict() for f in result.findings],
        "runs": [_run_dict(r) for r in result.runs],
        "generic_run": _run_dict(result.generic_run) if result.generic_run else None,
        "error": result.error, "notes": result.notes,
    }


def _run_dict(run: PlanRun) -> dict[str, Any]:
    return {"role": run.role, "values_label": run.label, "values": run.values,
            "analyzed": run.analyzed, "ms": run.ms, "error": run.error}


def as_dict(analysis: Analysis) -> dict[str, Any]:
    return {"id": analysis.id, "database": analysis.database,
            "collected_at": analysis.collected_at,
            "queries": [_query_dict(r) for r in analysis.results],
            "recommendations": analysis.recommendations,
            "recommendations_declined": analysis.declined, "cleanup": analysis.cleanup,
            "notes": analysis.notes, "timings": analysis.timings,
            "owner_plans_under_rls": asdict(analysis.owner_rls) if analysis.owner_rls else None}


def as_json(analysis: Analysis) -> str:
    return json.dumps(as_dict(analysis), indent=2, default=str)


def _title(result: QueryResult) -> str:
    s = result.statement
    return s.name or (f"queryid {s.queryid}" if s.queryid else "statement")


def _figures(result: QueryResult) -> str:
    s = result.statement
    if s.source == "watched" and not s.calls:
        measured = [r.ms for r in result.runs if r.ms is not None]
        return (f"watched query, {max(measured):.1f} ms measured" if measured
                else "watched query")
    return f"{s.mean_ms:.1f} ms mean · {s.total_ms / 1000:.1f} s total · {s.calls:,} calls"


def _values_used(result: QueryResult) -> str:
    shown = []
    for run in result.runs:
        if run.role != "owner":
            continue
        values = ", ".join("NULL" if v is None else v for v in run.values) or "no parameters"
        timing = f"{run.ms:.1f} ms" if run.ms is not None else (run.error or "estimated")
        shown.append(f"{run.label}: ({values}) → {timing}")
    generic = result.generic_run
    if generic is not None:
        timing = (f"{generic.ms:.1f} ms" if generic.ms is not None else generic.error
                  or "planned only: not chosen, or the values' own plan")
        shown.append(f"generic plan ({generic.role}) with the {generic.label} values → {timing}")
    return "; ".join(shown)


def markdown(analysis: Analysis) -> str:
    lines = [f"# Query performance analysis — {analysis.collected_at[:10]}", "",
             f"Database `{analysis.database}`, collected {analysis.collected_at}.", ""]
    lines += [f"> {note}" for note in analysis.notes]
    lines += ["", "## Top slowest statements", "",
              "| # | statement | calls | mean ms | total ms | findings |",
              "|---|---|---|---|---|---|"]
    for n, result in enumerate(analysis.results, 1):
        s = result.statement
        kinds = ", ".join(f.kind for f in result.findings) or "—"
        lines.append(f"| {n} | {_title(result)} | {s.calls:,} | {s.mean_ms:.2f} | "
                     f"{s.total_ms:.1f} | {kinds} |")
    for n, result in enumerate(analysis.results, 1):
        s = result.statement
        lines += ["", f"## {n}. {_title(result)}", "", f"Source: {s.source}. {_figures(result)}.",
                  "", "```sql", s.query, "```", ""]
        if result.error:
            lines += [f"**Not analysed:** {result.error}", ""]
        else:
            lines += [f"**Plan:** {result.plan_summary}", ""]
        if result.app_plan_summary:
            same = "differs from" if result.app_plan_differs else "is the same as"
            lines += [f"**As the application role** (plan {same} the owner's): "
                      f"{result.app_plan_summary}", ""]
        lines += [f"**Values used:** {_values_used(result)}", ""]
        lines += [f"_{note}_" for note in result.notes]
        if result.findings:
            lines += ["", "| finding | table | evidence | fix |", "|---|---|---|---|"]
            lines += [f"| {f.kind} | {f.table or '—'} | {_cell(f.detail)} | {_cell(f.fix)} |"
                      for f in result.findings]
        elif not result.error:
            lines.append("No problems found in this plan.")
        main = next((r for r in result.runs if r.plan is not None and r.role == "owner"), None)
        if main is not None:
            lines += ["", "<details><summary>EXPLAIN output</summary>", "", "```json",
                      json.dumps(main.plan, indent=1)[:20000], "```", "</details>"]
    lines += ["", "## Recommendations", ""]
    if analysis.recommendations:
        for rec in analysis.recommendations:
            lines += [f"### {rec.get('index') or 'index'} on {rec.get('table')}", "",
                      "```sql", str(rec.get("sql")), "```",
                      "", f"- serves: {', '.join(rec.get('queries') or [])}",
                      f"- planner cost: {rec.get('cost_before')} → {rec.get('cost_after')}",
                      f"- {_measured(rec)}",
                      f"- size: {_size(rec)}; write cost about {rec.get('write_penalty_ms', 0)} ms "
                      "for the writes in the same window", ""]
    else:
        lines.append("No index recommendations in this report.")
    if analysis.declined:
        lines += ["", "## Not recommended", "",
                  "Statements a finding says need an index, and why none is recommended:", ""]
        lines += [f"- **{d['statement']}**: {d['reason']}"
                  + (f" (`{d['candidate']}`)" if d.get("candidate") else "")
                  for d in analysis.declined]
    if analysis.cleanup:
        lines += ["", "## Cleanup", "", "Indexes that cost writes and space and serve nothing "
                  "another index does not:", ""]
        lines += [f"- `{c['sql']}` ({(c.get('size_bytes') or 0) / 1024 / 1024:.1f} MB): "
                  f"{c.get('reason')}; {c.get('write_cost')}" for c in analysis.cleanup]
    return "\n".join(lines) + "\n"


def _measured(rec: Mapping[str, Any]) -> str:
    if rec.get("measured_before_ms") is not None:
        return (f"measured on a scratch copy: {rec['measured_before_ms']} ms → "
                f"{rec.get('measured_after_ms')} ms (built in {rec.get('build_seconds')} s)")
    return (f"predicted saving: {rec.get('benefit_ms', '?')} ms over the window "
            "(HypoPG estimate)")


def _size(rec: Mapping[str, Any]) -> str:
    size = f"{(rec.get('size_bytes') or 0) / 1024 / 1024:.1f} MB"
    return size + (" (estimated)" if rec.get("size_estimated") else " (built)")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def blocks(analysis: Analysis, *, file_note: bool = True) -> list[dict[str, Any]]:
    """The channel summary: headline, one section per statement, notes; within Block Kit limits."""
    found = sum(len(r.findings) for r in analysis.results)
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(
            f"Query analysis: {len(analysis.results)} statements, {found} findings", 150)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(
            f"`{analysis.database}` · {analysis.collected_at}"
            + (" · full report attached in the thread" if file_note else ""))}]},
    ]
    for note in analysis.notes[:3]:
        out.append({"type": "section", "text": {"type": "mrkdwn",
                                                 "text": _clip(f":information_source: {note}")}})
    for n, result in enumerate(analysis.results, 1):
        if len(out) >= MAX_BLOCKS - 6:
            out.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                        f"…and {len(analysis.results) - n + 1} more in the report file"}]})
            break
        out += [{"type": "divider"}, {"type": "section", "text": {"type": "mrkdwn",
                                                                   "text": _section(n, result)}}]
    if analysis.declined:
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(
            "*Not recommended:* " + "\n".join(f"{d['statement']}: {d['reason']}"
                                               for d in analysis.declined[:3]))}]})
    if analysis.recommendations:
        preview = "\n".join(
            f"• `{_clip(str(r.get('sql')), 400)}`\n   serves "
            f"{len(r.get('queries') or [])} statement(s); {_measured(r)}; {_size(r)}"
            for r in analysis.recommendations[:5])
        out += [{"type": "divider"}, {"type": "section", "text": {
            "type": "mrkdwn", "text": _clip(f"*Recommended indexes*\n{preview}")}}]
        if analysis.cleanup:
            out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(
                f"{len(analysis.cleanup)} index(es) could be dropped (unused or duplicate): "
                "see Cleanup in the report")}]})
        if analysis.id is not None:
            out.append({"type": "actions", "block_id": "propose", "elements": [{
                "type": "button", "action_id": PROPOSE, "value": str(analysis.id),
                "text": {"type": "plain_text", "text": "Propose migration"}}]})
    return out[:MAX_BLOCKS]


def _section(n: int, result: QueryResult) -> str:
    query = " ".join(result.statement.query.split())
    if len(query) > QUERY_PREVIEW:
        query = query[:QUERY_PREVIEW] + "…"
    lines = [f"*{n}. {_title(result)}* — {_figures(result)}", f"```{query}```"]
    if result.error:
        lines.append(f":warning: {result.error}")
    else:
        lines.append(f"*Plan:* {result.plan_summary}")
        if result.app_plan_differs:
            lines.append(f"*As the app:* {result.app_plan_summary}")
        for finding in result.findings[:4]:
            lines.append(f"• *{finding.kind}* {finding.detail}\n   _Fix:_ {finding.fix}")
        if not result.findings:
            lines.append(":white_check_mark: no problems found")
    return _clip("\n".join(lines))


def print_text(analysis: Analysis, console: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    console.print(Text(f"Query analysis of {analysis.database} at {analysis.collected_at}",
                       style="bold"))
    for note in analysis.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    table = Table(show_lines=True)
    for column in ("#", "statement", "calls", "mean ms", "total ms", "plan / findings"):
        table.add_column(column, overflow="fold")
    for n, result in enumerate(analysis.results, 1):
        s = result.statement
        detail = Text(result.error or result.plan_summary)
        for finding in result.findings:
            detail.append(f"\n• {finding.kind}: {finding.detail}\n  fix: {finding.fix}",
                          style="red" if finding.kind != "misestimate" else "yellow")
        table.add_row(str(n), Text(f"{_title(result)}\n{' '.join(s.query.split())[:200]}"),
                      f"{s.calls:,}", f"{s.mean_ms:.2f}", f"{s.total_ms:.1f}", detail)
    console.print(table)
    for rec in analysis.recommendations:
        console.print(Text(f"recommend: {rec.get('sql')}", style="bold green"))
        console.print(Text(f"  serves {', '.join(rec.get('queries') or [])}; {_measured(rec)}; "
                           f"{_size(rec)}"))
    for declined in analysis.declined:
        console.print(Text(f"not recommended for {declined['statement']}: "
                           f"{declined['reason']}", style="yellow"))
