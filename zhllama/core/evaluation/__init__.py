"""Benchmarks: C-Eval / CMMLU multiple choice and LongBench generation, scored reproducibly."""
