"""Benchmarks: each module measures ratios against a baseline run in the same process."""
