"""`/hotdata analyze compare`: the last two analyses side by side, as Slack mrkdwn (which the
terminal prints as it is)."""

from __future__ import annotations

from bot.analysis.plan_history import Change, Comparison, Shape

SHOWN = 10  # statements listed in each part
QUERY_CHARS = 80


def _query(shape: Shape) -> str:
    text = " ".join(shape.query.split())
    return text if len(text) <= QUERY_CHARS else text[:QUERY_CHARS - 1] + "…"


def _ms(ms: float | None) -> str:
    return "not run" if ms is None else f"{ms:.1f} ms"


def _times(change: Change) -> str:
    slower = change.slower
    times = f"{_ms(change.before.ms)} → {_ms(change.after.ms)}"
    return times + (f" ({slower:.1f} times)" if slower is not None else "")


def comparison(found: Comparison | None, ratio: float = 2.0) -> str:
    """`ratio`: how many times slower a changed plan must be to count as a regression."""
    if found is None:
        return ("Nothing to compare yet: `/hotdata analyze` stores each analysis' plans, and "
                "the comparison needs two of them.")
    changed = [c for c in found.both if c.plan_changed]
    regressed = [c for c in changed if (c.slower or 0) >= ratio]
    lines = [f"*Analysis #{found.before_id}* ({found.before_at:%Y-%m-%d %H:%M} UTC) → "
             f"*#{found.after_id}* ({found.after_at:%Y-%m-%d %H:%M} UTC): "
             f"{len(found.both)} statement plan(s) in both, {len(changed)} changed, "
             f"{len(regressed)} of them at least {ratio:g} times as slow"]
    for change in sorted(changed, key=lambda c: -(c.slower or 0))[:SHOWN]:
        lines += [f"• `{_query(change.after)}` ({change.after.role}): {_times(change)}",
                  f"    what changed: {'; '.join(change.changes)}",
                  f"    before: {change.before.summary or 'no summary'}",
                  f"    now: {change.after.summary or 'no summary'}"]
    same = sorted((c for c in found.both if not c.plan_changed),
                  key=lambda c: -(c.slower or 0))
    if same:
        lines.append(f"Same plan: {len(same)} statement(s); the slowest change: "
                     f"`{_query(same[0].after)}` {_times(same[0])}")
    for title, shapes in (("Only in the newer analysis", found.only_after),
                          ("Only in the older analysis", found.only_before)):
        if shapes:
            lines.append(f"{title}: " + ", ".join(f"`{_query(s)}`" for s in shapes[:SHOWN])
                         + (f" and {len(shapes) - SHOWN} more" if len(shapes) > SHOWN else ""))
    return "\n".join(lines)[:3900]
