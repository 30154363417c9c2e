"""Workload-aware selection: greedy by benefit per byte, adding an index or widening a chosen one.

The cost of a configuration comes from a callback (HypoPG what-if costing), so this module is
pure and unit-testable: statement `s` with weight `w` (its calls * mean time, in ms) is predicted
to take `w * cost(s, config) / cost(s, no new index)`, averaged over its parameter value sets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.advisor.model import Candidate
from bot.catalog import kept_beside

MIN_GAIN_BYTES = 8192  # benefit is divided by at least one page: tiny indexes are not free
MIN_BENEFIT_SHARE = 0.01  # an index must save 1 % of the time the workload has left
USED_SHARE = 0.01  # a statement is "served" when its predicted time drops by 1 %
# An index as large as its table must save at least this share of the time the workload still
# spends on that table, with the indexes chosen so far (what is left to win there: priced
# against the time before any index, a second index would pay for the first one's savings).
# Planner costs overstate what separates two index plans on a cached table (a
# random page costs four sequential ones), so without a price per byte the last rounds would
# buy large indexes (a covering variant, a second index for one statement) for savings the
# server never shows.
SIZE_PRICE = 0.05


@dataclass(frozen=True)
class Workload:
    """One statement as the selection sees it."""

    key: str
    weight_ms: float
    tables: frozenset[str]  # schema.table


Relative = Callable[[Workload, tuple[Candidate, ...]], Awaitable[float]]


@dataclass
class Selection:
    chosen: list[Candidate]
    benefit_ms: dict[Candidate, float]
    penalty_ms: dict[Candidate, float]
    served: dict[Candidate, list[str]]
    predicted_ms: dict[str, float]


async def select(workload: list[Workload], candidates: list[Candidate], sizes: dict[Candidate, int],
                 penalty_ms: dict[Candidate, float], budget_bytes: int,
                 relative: Relative, table_bytes: dict[str, int] | None = None) -> Selection:
    """Choose indexes for `workload` within `budget_bytes`.

    Each round takes the move with the best (saved ms - write penalty) per byte: a new index,
    or a wider index replacing a chosen one it extends (or joining it, when the chosen one is
    small enough to keep: `kept_beside`). Stops when no move saves at least
    MIN_BENEFIT_SHARE of the workload, nor, given `table_bytes` (schema.table → bytes), its
    price: SIZE_PRICE of the time still spent on its table per table's worth of growth. Then
    drops any chosen index no statement still needs.
    """
    chosen: list[Candidate] = []

    def price(candidate: Candidate, growth: int, on_table_ms: float) -> float:
        """What `growth` bytes of `candidate` must save, `on_table_ms` being the time the
        workload spends on its table without it."""
        if table_bytes is None or not table_bytes.get(candidate.qualified):
            return 0.0
        return SIZE_PRICE * growth / table_bytes[candidate.qualified] * on_table_ms

    async def predicted(config: list[Candidate], only: str | None = None) -> dict[str, float]:
        times = {}
        for w in workload:
            if only is not None and only not in w.tables:
                continue
            relevant = tuple(c for c in config if c.qualified in w.tables)
            times[w.key] = w.weight_ms * (await relative(w, relevant) if relevant else 1.0)
        return times

    def moves(chosen: list[Candidate]) -> list[tuple[Candidate, Candidate | None]]:
        """Each candidate not chosen, with the chosen index it would replace (None: added). A
        candidate a chosen index widens is redundant, unless it is small enough to be kept
        beside it (`kept_beside`: a deduplicated key); one that widens a chosen index
        replaces it, or joins it when that one is small enough to be kept beside it."""
        found: list[tuple[Candidate, Candidate | None]] = []
        for candidate in candidates:
            if candidate in chosen or any(
                    c.widens(candidate) and not kept_beside(sizes[candidate], sizes[c])
                    for c in chosen):
                continue
            replaced = next((c for c in chosen if candidate.widens(c)), None)
            if replaced is None or kept_beside(sizes[replaced], sizes[candidate]):
                found.append((candidate, None))
            if replaced is not None:
                found.append((candidate, replaced))
        return found

    while True:
        best: tuple[float, float, Candidate, Candidate | None] | None = None
        used = sum(sizes[c] for c in chosen)
        # what is left to win: once the big savings are taken, smaller ones matter
        remaining = sum((await predicted(chosen)).values())
        for candidate, replaced in moves(chosen):
            growth = sizes[candidate] - (sizes[replaced] if replaced else 0)
            if used + growth > budget_bytes:
                continue
            config = [c for c in chosen if c != replaced] + [candidate]
            before = await predicted(chosen, candidate.qualified)
            after = await predicted(config, candidate.qualified)
            benefit = sum(before.values()) - sum(after.values()) - penalty_ms[candidate]
            if replaced is not None:
                benefit += penalty_ms[replaced]
            if benefit < max(MIN_BENEFIT_SHARE * remaining,
                             price(candidate, growth, sum(before.values()))):
                continue
            ratio = benefit / max(growth, MIN_GAIN_BYTES)
            if best is None or ratio > best[0]:
                best = (ratio, benefit, candidate, replaced)
        if best is None:
            break
        _, _, candidate, replaced = best
        chosen = [c for c in chosen if c != replaced] + [candidate]

    # Each survivor must still pay for itself with the others in place, and make at least one
    # statement noticeably faster.
    for candidate in list(chosen):
        others = [c for c in chosen if c != candidate]
        without = await predicted(others, candidate.qualified)
        with_it = await predicted(chosen, candidate.qualified)
        helps = any(with_it[k] < without[k] * (1 - USED_SHARE) for k in with_it)
        if not helps or sum(without.values()) - sum(with_it.values()) - penalty_ms[
                candidate] <= price(candidate, sizes[candidate], sum(without.values())):
            chosen = others

    result = Selection(chosen, {}, {}, {}, await predicted(chosen))
    for candidate in chosen:
        others = [c for c in chosen if c != candidate]
        without = await predicted(others, candidate.qualified)
        with_it = await predicted(chosen, candidate.qualified)
        result.benefit_ms[candidate] = sum(without.values()) - sum(with_it.values())
        result.penalty_ms[candidate] = penalty_ms[candidate]
        result.served[candidate] = [k for k in with_it
                                    if with_it[k] < without[k] * (1 - USED_SHARE)]
    return result
