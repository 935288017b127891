"""The one place llama.cpp models are constructed (engine, perplexity, tests, benchmarks).

Measured on this project's CI machine kind (llama-cpp-python 0.3.36 built from source, a CPU with
AMX_INT8): evaluating more than one token at a time on a Q4_1 model (SmolLM2-135M-Instruct)
crashes the process with a segmentation fault inside `llama_decode`; with the model's "extra
buffer types" (weight repacking into AMX/CPU-optimised layouts) turned off the same calls run.
llama-cpp-python does not expose that switch, so `new_llama` sets it in the model parameters while
the model is built, only on CPUs where llama.cpp reports AMX. `ZHLLAMA_LLAMACPP_REPACK=1` keeps the
extra buffers anyway (for a fixed llama.cpp), `=0` turns them off on any CPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any


@functools.cache
def cpu_has_amx() -> bool:
    import llama_cpp

    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


@contextlib.contextmanager
def _model_params(**fields: Any) -> Iterator[None]:
    """Make `llama_model_default_params()` return params with `fields` set, for one construction."""
    import llama_cpp.llama as high_level

    original = high_level.llama_cpp.llama_model_default_params

    def patched():
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    high_level.llama_cpp.llama_model_default_params = patched
    try:
        yield
    finally:
        high_level.llama_cpp.llama_model_default_params = original


def new_llama(model_path: str, **kwargs: Any):
    """`llama_cpp.Llama(model_path, **kwargs)`, safe on AMX CPUs (see the module docstring)."""
    from llama_cpp import Llama

    setting = os.environ.get("ZHLLAMA_LLAMACPP_REPACK")
    if setting == "1" or (setting != "0" and not cpu_has_amx()):
        return Llama(model_path=model_path, **kwargs)
    with _model_params(use_extra_bufts=False):
        return Llama(model_path=model_path, **kwargs)
