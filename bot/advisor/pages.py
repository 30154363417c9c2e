"""What-if plan costs with each hypothetical index as large as PostgreSQL would build it.

HypoPG sizes a hypothetical B-tree with a padded guess: every entry full width, 30 % bloat, no
deduplication. The planner then charges a scan of that index for pages the built index does not
have: three to five times too many on a low-cardinality key, where the built index keeps one
copy of each key per posting list. A count over a common status is then priced as if the
narrow index were no smaller than a wide one, and the narrow index, twice as fast once built,
never looks worth having.

So each index scan of a hypothetical index in a what-if plan is credited the random page reads
the padding cost it: `random_page_cost` for each page of HypoPG's excess (its size less
`btree.size`'s) in the share of the index the scan reads (its rows over the index's). Only
scans run once are corrected: a repeated (parameterised) scan's page reads are mostly cached in
PostgreSQL's own model, and are few per loop anyway. The plan the planner chose stays the plan:
this corrects what it costs, not which plan wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.advisor.model import Candidate

PAGE = 8192
NAME_LIMIT = 63  # NAMEDATALEN - 1: HypoPG truncates its names there
INDEX_SCANS = frozenset({"Index Scan", "Index Only Scan", "Bitmap Index Scan"})


@dataclass(frozen=True)
class Padding:
    """A hypothetical index's pages beyond the built index's, and the rows it holds."""

    candidate: Candidate
    excess_pages: float
    rows: float


def hypothetical_name(candidate: Candidate) -> str:
    """The name HypoPG gives `candidate`, after its `<oid>`: the access method, the table (with
    its schema unless public) and the columns, keys and included."""
    schema = "" if candidate.schema == "public" else f"{candidate.schema}_"
    columns = [c.removesuffix(" DESC") for c in (*candidate.columns, *candidate.include)]
    return f"btree_{schema}{candidate.table}_{'_'.join(columns)}"


def _named(name: str, named: list[tuple[str, Padding]]) -> Padding | None:
    """The padding of the hypothetical index called `name` (`<oid>btree_…`, perhaps truncated)
    among `named` (each padding with its `hypothetical_name`), when exactly one could be it."""
    found = re.fullmatch(r"<\d+>(.*)", name)
    if found is None:
        return None
    shown = found.group(1)
    truncated = len(name) >= NAME_LIMIT
    matching = [p for full, p in named
                if (full.startswith(shown) if truncated else full == shown)]
    return matching[0] if len(matching) == 1 else None


# nodes that read all their input before they return a row (a bitmap is built whole)
BLOCKING = frozenset({"Sort", "Hash", "Materialize", "SetOp", "WindowAgg", "Bitmap Heap Scan",
                      "BitmapAnd", "BitmapOr"})


def _reads_all(node: dict[str, Any]) -> bool:
    """Whether `node` reads all its input, however little of its output its parent reads."""
    kind = node.get("Node Type")
    return kind in BLOCKING or (kind == "Aggregate" and node.get("Strategy") != "Sorted")


def credit(plan: dict[str, Any], paddings: list[Padding], random_page_cost: float) -> float:
    """The cost HypoPG's padding adds to `plan` (`EXPLAIN (FORMAT JSON)`'s first element): to
    take off its total cost."""
    if not paddings:
        return 0.0
    named = [(hypothetical_name(p.candidate), p) for p in paddings]
    total = 0.0

    def visit(node: dict[str, Any], repeated: bool, read: float) -> None:
        """`read`: the share of this node's output its parents read (a Limit reads its count)."""
        nonlocal total
        padding = _named(node.get("Index Name", ""), named) \
            if node.get("Node Type") in INDEX_SCANS and not repeated else None
        if padding is not None and padding.rows > 0:
            share = min(1.0, float(node.get("Plan Rows", 0)) / padding.rows)
            total += read * random_page_cost * padding.excess_pages * share
        children = node.get("Plans", [])
        if _reads_all(node):
            read = 1.0
        elif node.get("Node Type") == "Limit" and children:
            below = float(children[0].get("Plan Rows", 0))
            if below > 0:
                read *= min(1.0, float(node.get("Plan Rows", 0)) / below)
        for child in children:
            relation = child.get("Parent Relationship")
            visit(child, repeated or relation == "SubPlan" or (
                relation == "Inner" and node.get("Node Type") == "Nested Loop"), read)

    visit(plan["Plan"], False, 1.0)
    cost = float(plan["Plan"]["Total Cost"])
    return max(-cost, min(total, cost))  # within the plan's own cost, either way
