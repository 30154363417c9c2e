"""Query analysis, step by step: collect → choose values → plan → find → report."""
