"""pretrain / sft on tiny models: loss falls, resume is bit-exact, adapters reload, data errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from zhllama.core.assets import data_path
from zhllama.core.errors import UserError
from zhllama.core.training import SftConfig, pretrain, sft


def write_records(path, records):
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def test_sft_memorises_small_set(tmp_path, tiny_zh_model, tiny_cfg):
    data = write_records(
        tmp_path / "mem.json",
        [
            {"instruction": "中国的首都是哪里？", "input": "", "output": "北京。"},
            {"instruction": "一加一等于几？", "input": "", "output": "二。"},
        ],
    )
    cfg = tiny_cfg(
        tiny_zh_model,
        data,
        config=SftConfig,
        max_steps=40,
        learning_rate=5e-3,
        per_device_train_batch_size=2,
        template="alpaca",
        max_seq_length=128,
    )
    summary = sft(cfg)
    assert summary["steps"] == 40
    assert summary["final_loss"] < 0.5 * summary["first_loss"]
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.model",
        "tokenizer.json",
        "train_summary.json",
        "loss.png",
    ):
        assert (cfg.output / name).is_file(), name


def _strip_final(out):
    for p in out.iterdir():
        if p.name != "checkpoints":
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def test_resume_is_bit_exact(tmp_path, tiny_base_model, merged_tokenizer, tiny_cfg):
    common = dict(
        tokenizer=merged_tokenizer,
        max_steps=6,
        save_steps=3,
        lora_dropout=0.05,
        block_size=32,
        lr_scheduler_type="cosine",
        warmup_ratio=0.2,
    )
    data = data_path("corpus_zh.txt")
    straight = tiny_cfg(tiny_base_model, data, output=tmp_path / "a", **common)
    pretrain(straight)
    interrupted = tiny_cfg(tiny_base_model, data, output=tmp_path / "b", **common)
    pretrain(interrupted)
    # simulate a kill after step 3: only checkpoint-3 survives, no final artifacts
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "checkpoint-6")
    _strip_final(tmp_path / "b")
    resumed = tiny_cfg(tiny_base_model, data, output=tmp_path / "b", resume=True, **common)
    summary = pretrain(resumed)
    assert summary["steps"] == 6
    a = load_file(tmp_path / "a" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert any("embed_tokens" in k for k in a) and any("lm_head" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_adapter_reloads_with_peft_on_resized_base(tmp_path, tiny_base_model, merged_tokenizer, tiny_cfg):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from zhllama.core.tokenizer import ZhTokenizer
    from zhllama.core.training.embeddings import padded_size

    cfg = tiny_cfg(tiny_base_model, data_path("corpus_zh.txt"), tokenizer=merged_tokenizer, block_size=32)
    summary = pretrain(cfg)
    rows = padded_size(len(ZhTokenizer(merged_tokenizer)))
    assert summary["vocab_size"] == rows and rows % 64 == 0
    base = AutoModelForCausalLM.from_pretrained(str(tiny_base_model))
    base.resize_token_embeddings(rows, mean_resizing=False)
    model = PeftModel.from_pretrained(base, str(cfg.output))
    saved = load_file(cfg.output / "adapter_model.safetensors")
    key = next(k for k in saved if "embed_tokens" in k)
    assert saved[key].shape[0] == rows
    live = model.get_input_embeddings().weight
    assert torch.equal(live, saved[key])
    ids = torch.tensor([ZhTokenizer(cfg.output).encode("中国的首都是北京", bos=True)])
    assert model(ids).logits.shape == (1, ids.shape[1], rows)


def test_mean_of_pieces_init_beats_default_init(tmp_path, tiny_base_model, base_tokenizer, merged_tokenizer, tiny_cfg):
    """New-token loss at step 0 is lower with mean-of-base-pieces rows than with default rows."""
    from transformers import AutoModelForCausalLM

    from zhllama.core.tokenizer import ZhTokenizer
    from zhllama.core.training.embeddings import padded_size, resize_for_tokenizer

    # a base that knows some Chinese through its byte pieces: full training with the base tokenizer
    trained = tiny_cfg(
        tiny_base_model,
        data_path("corpus_zh.txt"),
        output=tmp_path / "trained",
        full=True,
        max_steps=80,
        learning_rate=3e-3,
        per_device_train_batch_size=4,
        block_size=64,
    )
    pretrain(trained)
    tok, base_tok = ZhTokenizer(merged_tokenizer), ZhTokenizer(base_tokenizer)
    lines = data_path("corpus_zh.txt").read_text(encoding="utf-8").splitlines()[:30]

    def new_token_loss(model) -> float:
        total, count = 0.0, 0
        with torch.no_grad():
            for line in lines:
                ids = torch.tensor([tok.encode(line, bos=True)])
                logits = model(ids).logits[0, :-1]
                targets = ids[0, 1:]
                mask = targets >= len(base_tok)
                losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
                total += float(losses[mask].sum())
                count += int(mask.sum())
        return total / count

    ours = AutoModelForCausalLM.from_pretrained(str(trained.output))
    assert resize_for_tokenizer(ours, tok, base_tok)
    default = AutoModelForCausalLM.from_pretrained(str(trained.output))
    default.resize_token_embeddings(padded_size(len(tok)), mean_resizing=False)
    assert new_token_loss(ours) < new_token_loss(default)


def test_packing_matches_unpacked_per_example_losses(tiny_zh_model, merged_tokenizer):
    from transformers import AutoModelForCausalLM

    from zhllama.core.templates import get_template
    from zhllama.core.tokenizer import ZhTokenizer
    from zhllama.core.training import data
    from zhllama.core.training.collate import PackedCollator, PadCollator, pack

    tok = ZhTokenizer(merged_tokenizer)
    convs = [
        data.record_messages("x", i, r)
        for i, r in enumerate(json.loads(data_path("instructions.json").read_text())[:6])
    ]
    batch = {"roles": [[m.role for m in c] for c in convs], "contents": [[m.content for m in c] for c in convs]}
    examples = data.encode_conversations(batch, tok, get_template("llama2-zh"), None, 256)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_zh_model), attn_implementation="sdpa").eval()

    def per_token(logits, labels):
        return torch.nn.functional.cross_entropy(logits[:-1], labels[1:], reduction="none", ignore_index=-100)

    expected = []
    for ids, labels in zip(examples["input_ids"], examples["labels"], strict=True):
        batch = PadCollator(tok.pad_id)([{"input_ids": ids, "labels": labels}])
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0]
        lab = batch["labels"][0]
        expected.append(float(per_token(logits, lab)[lab[1:] != -100].mean()))
    packed = pack(examples, 400)
    assert len(packed["input_ids"]) < len(examples["input_ids"])
    batch = PackedCollator(tok.pad_id)([{k: packed[k][i] for k in packed} for i in range(len(packed["input_ids"]))])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    got = []
    for row in range(logits.shape[0]):
        pos, lab = batch["position_ids"][row], batch["labels"][row]
        starts = [i for i in range(len(pos)) if pos[i] == 0] + [len(pos)]
        losses = per_token(logits[row], lab)
        for s, e in zip(starts[:-1], starts[1:], strict=True):
            segment = lab[s + 1 : e]
            if (segment != -100).any():
                got.append(float(losses[s : e - 1][segment != -100].mean()))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, abs=1e-4)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "bad.json: not valid JSON (line 1, column 1: Expecting value)"),
        ("[]", "no records"),
        ('[{"instruction": "a", "input": ""', "bad.json: not valid JSON (line 1, column 34: Expecting ',' delimiter)"),
        ('[{"instruction": "a", "input": ""}]', "record 0: missing string field 'output'"),
        ('[{"instruction": "a", "output": "b"}, 3]', "record 1: not a JSON object"),
    ],
)
def test_sft_bad_data_one_line_errors(tmp_path, tiny_zh_model, run_cli, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    code, _, err = run_cli(
        "sft",
        "--model",
        tiny_zh_model,
        "--data",
        bad,
        "--output",
        tmp_path / "o",
        "--max-steps",
        "1",
        "--cache-dir",
        tmp_path / "c",
    )
    assert code == 2
    assert err.count("\n") == 1 and message in err and str(bad) in err
    assert not (tmp_path / "o" / "adapter_model.safetensors").exists()


def test_pretrain_empty_file_and_tokenizer_mismatch(tmp_path, tiny_base_model, zh_sp_model, run_cli):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    code, _, err = run_cli(
        "pretrain",
        "--model",
        tiny_base_model,
        "--data",
        empty,
        "--output",
        tmp_path / "o",
        "--cache-dir",
        tmp_path / "c",
    )
    assert code == 2 and "empty" in err
    # a tokenizer that does not extend the model's own cannot be resized into it
    code, _, err = run_cli(
        "pretrain",
        "--model",
        tiny_base_model,
        "--tokenizer",
        zh_sp_model,
        "--data",
        data_path("corpus_zh.txt"),
        "--output",
        tmp_path / "o2",
        "--cache-dir",
        tmp_path / "c",
    )
    assert code == 2 and "must extend the model's" in err


def test_refuses_existing_output_without_force(tmp_path, tiny_zh_model, run_cli):
    out = tmp_path / "o"
    out.mkdir()
    (out / "x").write_text("keep")
    code, _, err = run_cli("pretrain", "--model", tiny_zh_model, "--data", data_path("corpus_zh.txt"), "--output", out)
    assert code == 2 and "--force" in err and (out / "x").exists()


@pytest.mark.slow
def test_two_process_gloo_run_end_to_end(tmp_path, tiny_base_model, merged_tokenizer):
    import os
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "-m",
            "zhllama",
            "--json",
            "pretrain",
            "--model",
            str(tiny_base_model),
            "--tokenizer",
            str(merged_tokenizer),
            "--data",
            str(data_path("corpus_zh.txt")),
            "--output",
            str(out),
            "--max-steps",
            "4",
            "--block-size",
            "32",
            "--lora-rank",
            "4",
            "--lora-alpha",
            "8",
            "--logging-steps",
            "1",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 4
    assert summary["tokens"] == 4 * 2 * 32  # both ranks' batches counted
    assert json.loads(proc.stdout)["steps"] == 4  # one report, from rank 0
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_qlora_4bit_trains_and_saves_adapter(tmp_path, tiny_base_model, merged_tokenizer, tiny_cfg):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    cfg = tiny_cfg(
        tiny_base_model,
        data_path("corpus_zh.txt"),
        tokenizer=merged_tokenizer,
        qlora=4,
        max_steps=3,
        block_size=32,
    )
    summary = pretrain(cfg)
    assert summary["steps"] == 3
    base = AutoModelForCausalLM.from_pretrained(
        str(tiny_base_model), quantization_config=BitsAndBytesConfig(load_in_4bit=True), device_map={"": "cpu"}
    )
    base.resize_token_embeddings(summary["vocab_size"], mean_resizing=False)
    model = PeftModel.from_pretrained(base, str(cfg.output))
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_qlora_rejects_bad_bits_and_full(tmp_path, tiny_base_model, tiny_cfg):
    with pytest.raises(UserError, match="--qlora: 3"):
        pretrain(tiny_cfg(tiny_base_model, data_path("corpus_zh.txt"), qlora=3))
    with pytest.raises(UserError, match="--full and --qlora"):
        pretrain(tiny_cfg(tiny_base_model, data_path("corpus_zh.txt"), output=tmp_path / "o2", qlora=4, full=True))


def test_validation_perplexity_and_dataset_cache(tmp_path, tiny_base_model, merged_tokenizer, tiny_cfg, capsys):
    import math

    from zhllama.core import console

    console.SETTINGS.quiet = False
    cfg = tiny_cfg(
        tiny_base_model,
        data_path("corpus_zh.txt"),
        tokenizer=merged_tokenizer,
        max_steps=2,
        validation_split=0.1,
        block_size=32,
    )
    summary = pretrain(cfg)
    assert summary["eval_perplexity"] == pytest.approx(math.exp(summary["eval_loss"]))
    assert "tokenized dataset" in capsys.readouterr().err
    again = tiny_cfg(
        tiny_base_model,
        data_path("corpus_zh.txt"),
        output=tmp_path / "again",
        tokenizer=merged_tokenizer,
        max_steps=2,
        validation_split=0.1,
        block_size=32,
    )
    assert pretrain(again)["eval_loss"] == pytest.approx(summary["eval_loss"])
    assert "reusing cached dataset" in capsys.readouterr().err
    # one tokenized file and one block set: the second run reused both
    assert [len(list((tmp_path / "cache" / kind).iterdir())) for kind in ("docs", "blocks")] == [1, 1]
