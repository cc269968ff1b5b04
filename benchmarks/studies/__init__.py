"""The studies behind docs/benchmarks.md: one module each, run as ``python -m benchmarks <name>``."""
