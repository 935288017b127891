"""`python -m zhllama.harness ARGS...`: lm-eval's own command line with the `zhllama` model registered.

Every `lm_eval` flag works as documented by lm-eval, e.g.
    python -m zhllama.harness --model zhllama --model_args model=merged.gguf --tasks ceval-valid --include_path tasks/
"""

from __future__ import annotations

import sys


def main() -> None:
    from zhllama.core.errors import UserError

    try:
        from zhllama.harness import register

        register()
    except UserError as exc:
        print(f"zhllama: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
