"""The periodic channel report: statistics snapshots, window deltas, health and a chart."""
