"""The real SmolLM2-135M-Instruct extended with a Chinese byte-level BPE vocabulary, end to end:
vocab merge -> pretrain (a few full steps, new rows) -> GGUF -> chat through both engines.

Full training rather than LoRA + `zhllama merge`: SmolLM2 ties lm_head to embed_tokens, and the
adapter of a resized tied model holds `lm_head.weight`, which `zhllama merge` refuses ("module
'lm_head' is not in the base model"; the base checkpoint has no lm_head tensor)."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def smollm2_model(smollm2_gguf, smollm2_tokenizer):
    """SmolLM2-135M-Instruct as an HF folder (fp32 weights read from the GGUF by transformers),
    converted once into the test-model cache next to the GGUF."""
    import shutil
    import tempfile
    from pathlib import Path

    folder = smollm2_gguf.parent / "SmolLM2-135M-Instruct-hf"
    if not (folder / "model.safetensors").is_file():
        from transformers import AutoModelForCausalLM, LlamaForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = LlamaForCausalLM(config)
        model.load_state_dict(loaded.state_dict())
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".hf-"))
        model.save_pretrained(str(tmp))
        for f in smollm2_tokenizer.iterdir():
            shutil.copyfile(f, tmp / f.name)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder


@pytest.mark.timeout(1800)
def test_extended_smollm2_trains_exports_and_chats(tmp_path, run_cli, smollm2_model, merged_smollm2, corpus_lines):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install 'zhllama[llamacpp]')")
    from transformers import AutoTokenizer

    from zhllama.core.engine import GenerationParams
    from zhllama.core.generation.runtime import load_runtime
    from zhllama.core.loading.options import ModelOptions
    from zhllama.core.templates import Message

    data = tmp_path / "zh.txt"
    data.write_text("\n".join(corpus_lines[:8]) + "\n", encoding="utf-8")
    full = tmp_path / "pt"
    code, out, err = run_cli(
        "--json", "pretrain", "--model", smollm2_model, "--tokenizer", merged_smollm2, "--data", data,
        "--output", full, "--full", "--max-steps", "2", "--block-size", "32", "--per-device-train-batch-size", "1",
        "--learning-rate", "1e-5", "--save-steps", "1000", "--cache-dir", tmp_path / "cache", "--seed", "1",
    )  # fmt: skip
    assert code == 0, err
    hf = AutoTokenizer.from_pretrained(str(full))
    merged_tok = AutoTokenizer.from_pretrained(str(merged_smollm2))
    assert len(hf) == len(merged_tok) and json.loads((full / "config.json").read_text())["vocab_size"] >= len(hf)
    gguf_file = tmp_path / "zh.gguf"
    code, _, err = run_cli("quantize", "gguf", "--model", full, "--type", "F16", "--output", gguf_file)
    assert code == 0, err

    answers = {}
    for engine, source in (("transformers", full), ("llamacpp", gguf_file)):
        runtime = load_runtime(ModelOptions(model=str(source)))  # --template auto: SmolLM2's ChatML
        try:
            assert runtime.template.name == "hf"
            for question in (QUESTION, "中国的首都是哪里？"):
                ids = runtime.prompt_ids([Message("user", question)])
                assert ids == list(
                    hf.apply_chat_template(
                        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True,
                        return_dict=False,
                    )
                )  # fmt: skip
                answers[engine, question] = runtime.reply(ids, GenerationParams(max_new_tokens=8, greedy=True)).run()
        finally:
            runtime.close()
    # English is untouched by the new rows: the extended model still knows Paris in both engines
    assert "Paris" in answers["transformers", QUESTION] and "Paris" in answers["llamacpp", QUESTION]
    assert answers["transformers", "中国的首都是哪里？"] == answers["llamacpp", "中国的首都是哪里？"]
