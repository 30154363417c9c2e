"""Sample databases for the demo, the tests and the benchmarks (HotDash: a dashboard app)."""
