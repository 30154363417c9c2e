"""Numbers as people read them."""

from __future__ import annotations


def duration(value: float | None) -> str:
    if value is None:
        return "unknown"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"
