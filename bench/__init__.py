"""Benchmarks (results in bench/RESULTS.md)."""
