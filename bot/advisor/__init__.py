"""Index advice: candidates, what-if costing, selection, verification, cleanup and lint."""
