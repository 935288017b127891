"""Built-in benchmarks (entry points in `zhllama.benchmarks`)."""
