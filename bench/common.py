"""What every benchmark here shares: argument checks, percentiles, progress on stderr."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def nearest_rank(ordered: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def logger(name: str) -> Callable[[str], None]:
    """Progress lines on stderr, so stdout carries only the JSON figures."""
    def log(message: str) -> None:
        print(f"[{name}] {message}", file=sys.stderr, flush=True)
    return log
