"""Benchmarks, each against a baseline in the same run: `python -m bench.NAME` (see README.md)."""
