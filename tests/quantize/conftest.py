"""Fixtures of the quantization tests: the real SmolLM2-135M as an HF folder (built once, cached)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import SMOLLM2_CACHE


@pytest.fixture(scope="session")
def smollm2_folder_real(smollm2_gguf) -> Path:
    """SmolLM2-135M-Instruct's trained weights (its Q4_1 GGUF dequantized by transformers) as safetensors.

    Cached next to the GGUF (`$ZHLLAMA_TEST_MODELS`); built into a temporary sibling and renamed, so
    an interrupted build leaves nothing half-written.
    """
    folder = SMOLLM2_CACHE / "smollm2-135m-hf"
    if (folder / "model.safetensors").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # plain fp32 weights from here on
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial))
    tok = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    tok.save_pretrained(str(partial))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder
