"""An extended byte-level BPE model: new embedding rows from the base's byte pieces, and its GGUF
tokenized by llama.cpp exactly as transformers tokenizes it (base and merged)."""

from __future__ import annotations

import pytest

from tests.vocab.conftest import ENGLISH

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, smollm2_tokenizer, merged_smollm2):
    from zhllama.core.tiny import build_tiny_llama

    root = tmp_path_factory.mktemp("tiny_bpe")
    return (
        build_tiny_llama(root / "base", tokenizer=smollm2_tokenizer, seed=0),
        build_tiny_llama(root / "merged", tokenizer=merged_smollm2, seed=0),
    )


@pytest.mark.slow
def test_new_rows_are_the_mean_of_the_base_rows_of_their_bytes(tiny_models, smollm2_tokenizer, merged_smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zhllama.core.bpe import token_bytes
    from zhllama.core.tokenizer import ZhTokenizer
    from zhllama.core.training.embeddings import resize_for_tokenizer

    base_dir, _ = tiny_models
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    before = model.get_input_embeddings().weight.detach().clone()
    head_before = model.get_output_embeddings().weight.detach().clone()
    merged, base = ZhTokenizer(merged_smollm2), ZhTokenizer(smollm2_tokenizer)
    assert resize_for_tokenizer(model, merged, base)
    emb = model.get_input_embeddings().weight.detach()
    head = model.get_output_embeddings().weight.detach()
    assert emb.shape[0] == len(merged) and torch.equal(emb[: before.shape[0]], before)
    base_hf = AutoTokenizer.from_pretrained(str(smollm2_tokenizer))
    merged_hf = AutoTokenizer.from_pretrained(str(merged_smollm2))
    checked = 0
    for token, idx in sorted(merged_hf.get_vocab().items(), key=lambda kv: kv[1]):
        if idx < before.shape[0] or idx in merged_hf.added_tokens_decoder:
            continue
        data = token_bytes(token)
        try:
            text = data.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            continue  # a piece of a character: its bytes have no text to encode independently
        expected = base_hf.encode(text, add_special_tokens=False)  # the base's own split of that text
        assert torch.allclose(emb[idx], before[expected].mean(0), atol=1e-6), token
        if not model.config.tie_word_embeddings:
            assert torch.allclose(head[idx], head_before[expected].mean(0), atol=1e-6), token
        checked += 1
    assert checked > 3000
    pads = [i for i, t in merged.hf.added_tokens_decoder.items() if t.content.startswith("<|zh_reserved_")]
    for i in pads:
        assert torch.allclose(emb[i], before.mean(0), atol=1e-6)


def _detokenize(llm, ids) -> bytes:
    """llama.cpp's own piece of each token (llama-cpp-python's `detokenize` truncates pieces at 32 bytes)."""
    import ctypes

    import llama_cpp

    buffer = ctypes.create_string_buffer(256)
    out = b""
    for i in ids:
        n = llama_cpp.llama_token_to_piece(llm._model.vocab, i, buffer, 256, 0, False)
        assert n >= 0
        out += buffer.raw[:n]
    return out


@pytest.mark.slow
def test_llama_cpp_tokenizes_base_and_merged_gguf_as_transformers(tmp_path, tiny_models, corpus_lines):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install 'zhllama[llamacpp]')")
    import gguf
    from transformers import AutoTokenizer

    from zhllama.core.loading.llamacpp import new_llama
    from zhllama.core.quantize.gguf_export import write_gguf

    lines = corpus_lines[:200] + ENGLISH + ["<|im_start|>user\n你好<|im_end|>", "🦙🚀 mixed 中英文 text，全角！"]
    for name, folder in zip(("base", "merged"), tiny_models, strict=True):
        out = tmp_path / f"{name}.gguf"
        write_gguf(folder, out, "F16")
        reader = gguf.GGUFReader(str(out))
        field = reader.fields["tokenizer.ggml.pre"]
        assert bytes(field.parts[field.data[0]]).decode() == "smollm"
        types = reader.fields["tokenizer.ggml.token_type"]
        types = [int(types.parts[i][0]) for i in types.data]
        hf = AutoTokenizer.from_pretrained(str(folder))
        specials = set(hf.added_tokens_decoder)
        assert all(types[i] == 3 for i in specials)  # CONTROL: <|im_end|> ..., and the <|zh_reserved_N|> padding
        assert all(t == 1 for i, t in enumerate(types) if i not in specials)  # NORMAL, new tokens included
        if name == "merged":
            pads = [i for i in specials if hf.added_tokens_decoder[i].content.startswith("<|zh_reserved_")]
            assert len(types) == len(hf) and len(hf) % 64 == 0 and pads and min(pads) > 49152
        llm = new_llama(str(out), n_ctx=64, vocab_only=True, verbose=False)
        try:
            assert llm.n_vocab() == len(hf)
            for text in lines:
                ours = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
                assert ours == hf.encode(text, add_special_tokens=False), (name, text[:40])
                assert llm.tokenize(text.encode("utf-8"), add_bos=True, special=True) == hf.encode(text), name
                if text in corpus_lines:
                    assert _detokenize(llm, ours).decode("utf-8") == text
        finally:
            llm.close()


def test_gguf_of_a_merge_whose_base_llama_cpp_does_not_know_is_refused(tmp_path, merged_smollm2, run_cli):
    import json
    import shutil

    from zhllama.core.tiny import build_tiny_llama

    folder = tmp_path / "tok"
    shutil.copytree(merged_smollm2, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["zhllama"]["llama_cpp_pre"] = "no-such-pre"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    model = build_tiny_llama(tmp_path / "m", tokenizer=folder, seed=0)
    code, _, err = run_cli("quantize", "gguf", "--model", model, "--type", "F16", "--output", tmp_path / "o.gguf")
    assert code == 2 and "no-such-pre" in err and "tokenizer_config.json" in err
    assert not (tmp_path / "o.gguf").exists()
