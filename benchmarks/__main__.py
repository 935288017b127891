"""`make bench`: run every benchmark module (or the ones named on the command line).

Each module in this folder defines `main() -> dict`; its printed ratios are the result.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path


def main() -> None:
    wanted = set(sys.argv[1:])
    here = Path(__file__).parent
    results = {}
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda m: m.name):
        if info.name.startswith("_") or (wanted and info.name not in wanted):
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        if hasattr(module, "main"):
            print(f"== benchmarks/{info.name}.py", flush=True)
            results[info.name] = module.main()
    out = Path(".bench")
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results written to {out / 'results.json'}")


if __name__ == "__main__":
    main()
