"""Benchmarks: each `fleet bench ...` measures the real path and writes JSON."""
