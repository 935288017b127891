"""zhllama as an lm-evaluation-harness model: `lm_eval --model zhllama --model_args model=PATH,...`.

lm-eval 0.4.13 finds models only in its own registry (no entry points), so zhllama must be
registered in the process that runs the harness. Three ways, all the same model class
(`zhllama.harness.lm.ZhllamaLM`):
- `python -m zhllama.harness ARGS...`: lm-eval's own CLI (`lm_eval ARGS...`, every flag) with the
  `zhllama` model registered;
- `zhllama eval harness --model PATH --tasks T ...`: zhllama's flags (every model source and
  option of `open_model`), results written atomically into `--output`;
- in Python: `import zhllama.harness; zhllama.harness.register()`, then
  `lm_eval.simple_evaluate(model="zhllama", model_args="model=PATH", ...)`.
"""

from __future__ import annotations

MODEL_NAME = "zhllama"
INSTALL_HINT = "pip install 'zhllama[harness]' (lm-eval 0.4.13)"


def register() -> None:
    """Register the `zhllama` model with lm-eval (idempotent)."""
    from zhllama.core.errors import MissingDependencyError
    from zhllama.core.registry import missing_modules

    if missing_modules(("lm_eval",)):
        raise MissingDependencyError(f"lm-eval is not installed: {INSTALL_HINT}")
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        import zhllama.harness.lm  # noqa: F401  (its decorator registers the class)
