"""Start-up time of the CLI: `zhllama --version`, `--help` and every command's `--help`.

Baseline, measured in the same run: `python -c "import typer, rich"` (the floor for a Typer + Rich
CLI). Each timing is the best of a few fresh processes. Goal: every figure <= 0.5 s on the 2-core
development machine (the test suite asserts only that torch is never imported while the CLI builds).
"""

from __future__ import annotations

import subprocess
import sys
import time

REPEATS = 3


def best_of(argv: list[str]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        best = min(best, time.perf_counter() - start)
    return best


def command_paths() -> list[list[str]]:
    from zhllama.cli.app import build_cli

    paths = []

    def walk(cmd, prefix):
        subs = getattr(cmd, "commands", None)
        if isinstance(subs, dict):
            for name, sub in sorted(subs.items()):
                walk(sub, [*prefix, name])
        else:
            paths.append(prefix)

    walk(build_cli(), [])
    return paths


def main() -> dict:
    baseline = best_of([sys.executable, "-c", "import typer, rich"])
    cli = [sys.executable, "-m", "zhllama"]
    results = {
        "import typer, rich": baseline,
        "--version": best_of([*cli, "--version"]),
        "--help": best_of([*cli, "--help"]),
    }
    for path in command_paths():
        results[" ".join(path) + " --help"] = best_of([*cli, *path, "--help"])
    worst = max(results, key=lambda k: results[k] if k != "import typer, rich" else 0)
    for name, seconds in results.items():
        print(f"{name:40s} {seconds:.2f} s")
    print(f"slowest: {worst} {results[worst]:.2f} s (baseline {baseline:.2f} s; goal <= 0.5 s)")
    return {"seconds": results, "slowest": worst}
