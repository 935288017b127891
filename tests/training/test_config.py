"""One schema for training options: generated flags, validation before writing, TrainingArguments
pass-through, output/input rules, resume fallback, rope scaling in the trained output."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil

import pytest

from zhllama.core.assets import data_path
from zhllama.core.errors import UserError
from zhllama.core.training import PretrainConfig, SftConfig, TrainConfig, pretrain


def command_params(name):
    import typer

    from zhllama.cli.training import register_training

    app = typer.Typer()
    register_training(app, (name,))
    app.command("other")(lambda: None)
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[name].params}


COMMANDS = {"pretrain": PretrainConfig, "sft": SftConfig}


def _alignment_configs():
    from zhllama.core.alignment.config import DpoConfig, PpoConfig, RmConfig

    return {"rm": RmConfig, "dpo": DpoConfig, "ppo": PpoConfig}


@pytest.mark.parametrize("name", ["pretrain", "sft", "rm", "dpo", "ppo"])
def test_flags_are_generated_from_the_schema(name):
    cls = {**COMMANDS, **_alignment_configs()}[name]
    params = command_params(name)
    fields = dataclasses.fields(cls)
    assert {f.name for f in fields} == set(params)
    for f in fields:
        assert params[f.name].help == f.metadata["help"] and f.metadata["help"]
        if f.default is not dataclasses.MISSING and f.default is not None and not f.metadata.get("required"):
            assert params[f.name].default == f.default, f.name  # the only place a default is declared
    flags = {opt for p in params.values() for opt in p.opts}
    for wanted in ("--max-grad-norm", "--weight-decay", "--optim", "--adam-beta1", "--adam-beta2", "--trainer-arg"):
        assert wanted in flags
    assert ("--block-size" in flags) == (name == "pretrain") and ("--packing" in flags) == (name == "sft")
    assert ("--max-seq-length" in flags) == (name != "pretrain") and ("--beta" in flags) == (name == "dpo")


@pytest.mark.parametrize("name", ["rm", "dpo", "ppo"])
def test_alignment_help_offers_only_what_the_task_accepts(name, run_cli, wide_help):
    """rm / dpo / ppo leave out the long-context and streaming groups and the tokenized-data cache (they
    tokenize in process): those flags are not offered."""
    from zhllama.core.training.options import DataOptions, LongContextOptions, SplitOptions, StreamingOptions

    code, out, err = run_cli(name, "--help")
    assert code == 0, err
    offered = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", out))
    left_out = {
        f"--{f.name.replace('_', '-')}" for g in (LongContextOptions, StreamingOptions) for f in dataclasses.fields(g)
    }
    left_out |= {f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(DataOptions)} - {
        f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(SplitOptions)
    }
    assert {"--cache-dir", "--preprocessing-workers"} <= left_out and "--validation-split" not in left_out
    assert offered and not offered & left_out and "--validation-split" in offered
    accepted = {opt for p in command_params(name).values() for opt in p.opts} | {"--help"}
    assert offered <= accepted  # every flag shown is one the command takes (none refused later)
    assert "--rope-scaling" in run_cli("sft", "--help")[1]


def test_trainer_args_reach_training_arguments(tmp_path, tiny_base_model):
    from zhllama.core.training.arguments import training_arguments

    cfg = PretrainConfig(
        model=tiny_base_model,
        data=[data_path("corpus_zh.txt")],
        output=tmp_path / "o",
        optim="sgd",
        max_grad_norm=0.5,
        adam_beta2=0.95,
        neftune_noise_alpha=5.0,
        trainer_arg=["label_smoothing_factor=0.1", "logging_first_step=true", "lr_scheduler_kwargs={'min_lr': 0.0}"],
    )
    cfg.validate()
    args = training_arguments(cfg, has_eval=False)
    assert (args.optim, args.max_grad_norm, args.adam_beta2, args.neftune_noise_alpha) == ("sgd", 0.5, 0.95, 5.0)
    assert args.label_smoothing_factor == 0.1 and args.logging_first_step is True
    assert args.lr_scheduler_kwargs == {"min_lr": 0.0}


BAD = [
    ("pretrain", ["--block-size", "0"], "--block-size: 0 must be >= 1"),
    ("pretrain", ["--learning-rate", "-1"], "--learning-rate: -1.0 must be > 0"),
    ("pretrain", ["--per-device-train-batch-size", "0"], "--per-device-train-batch-size: 0 must be >= 1"),
    ("pretrain", ["--gradient-accumulation-steps", "0"], "--gradient-accumulation-steps: 0 must be >= 1"),
    ("pretrain", ["--lora-rank", "0"], "--lora-rank: 0 must be >= 1"),
    ("pretrain", ["--learning-rate", "nan"], "--learning-rate: nan is not a finite number"),
    ("pretrain", ["--doc-separator", "tab"], "--doc-separator: tab must be one of eos, none"),
    ("pretrain", ["--rope-scaling", "linear"], "--rope-scaling and --rope-factor go together"),
    ("pretrain", ["--rope-scaling", "ntk", "--rope-factor", "2"], "--rope-scaling: ntk must be one of linear, yarn"),
    ("pretrain", ["--streaming"], "--streaming needs --max-steps"),
    ("pretrain", ["--trainer-arg", "max_grad_nrom=1"], "--trainer-arg max_grad_nrom: not a TrainingArguments field"),
    ("pretrain", ["--trainer-arg", "label_smoothing_factor=abc"], "--trainer-arg label_smoothing_factor=abc:"),
    ("pretrain", ["--trainer-arg", "output_dir=/tmp/x"], "--trainer-arg output_dir: set by zhllama"),
    ("pretrain", ["--trainer-arg", "nokey"], "--trainer-arg nokey: expected KEY=VALUE"),
    ("pretrain", ["--optim", "adamw_bogus"], "training arguments:"),
    ("sft", ["--max-seq-length", "-5"], "--max-seq-length: -5 must be >= 1"),
    ("sft", ["--lora-dropout", "1.5"], "--lora-dropout: 1.5 must be in [0, 1)"),
]


@pytest.mark.parametrize("command, args, message", BAD, ids=[" ".join(b[1]) for b in BAD])
def test_bad_values_exit_2_one_line_nothing_written(tmp_path, tiny_zh_model, run_cli, command, args, message):
    data = data_path("corpus_zh.txt" if command == "pretrain" else "instructions.json")
    out = tmp_path / "out"
    code, _, err = run_cli(command, "--model", tiny_zh_model, "--data", data, "--output", out, *args)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("zhllama: error: ") and message in err, err
    assert not out.exists()


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_output_may_not_be_or_sit_inside_an_input_even_with_force(tmp_path, tiny_base_model, run_cli):
    model = tmp_path / "model"
    shutil.copytree(tiny_base_model, model)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(data_path("corpus_zh.txt"), corpus / "a.txt")
    before = digest(model)
    for out in (model, model / "sub", corpus, corpus / "a.txt", tmp_path):
        code, _, err = run_cli("pretrain", "--model", model, "--data", corpus, "--output", out, "--force")
        assert code == 2 and err.count("\n") == 1 and "destroy the input" in err, err
    assert digest(model) == before and (corpus / "a.txt").is_file()


def test_yaml_config_is_validated_by_the_same_schema(tmp_path, tiny_zh_model, run_cli):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("per-device-train-batch-size: 0\nlearning-rate: 1e-3\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ("pretrain", "--model", tiny_zh_model, "--data", data_path("corpus_zh.txt"), "--output", out)
    code, _, err = run_cli("--config", cfg, *args)
    assert code == 2 and "--per-device-train-batch-size: 0 must be >= 1" in err and not out.exists()
    cfg.write_text("trainer-arg: ['warmup_stepz=3']\n", encoding="utf-8")
    code, _, err = run_cli("--config", cfg, *args)
    assert code == 2 and "warmup_stepz: not a TrainingArguments field" in err
    cfg.write_text("block_sise: 3\n", encoding="utf-8")
    code, _, err = run_cli("--config", cfg, *args)
    assert code == 2 and "unknown option 'block-sise'" in err


def test_failed_run_leaves_no_output_and_leftover_empty_checkpoints_do_not_block(
    tmp_path, tiny_base_model, tiny_cfg, monkeypatch
):
    from transformers import Trainer

    def boom(self, *a, **k):
        self.args.output_dir and __import__("os").makedirs(self.args.output_dir, exist_ok=True)
        raise RuntimeError("CUDA out of memory (simulated)")

    cfg = tiny_cfg(tiny_base_model, data_path("corpus_zh.txt"), block_size=32)
    with monkeypatch.context() as m:
        m.setattr(Trainer, "train", boom)
        with pytest.raises(RuntimeError):
            pretrain(cfg)
    assert not cfg.output.exists()
    (cfg.output / "checkpoints").mkdir(parents=True)  # what older versions left behind
    with pytest.raises(UserError, match="--resume needs a complete checkpoint"):
        pretrain(dataclasses.replace(cfg, resume=True))
    assert pretrain(cfg)["steps"] == 6  # a rerun is not blocked (no --force needed)


def test_resume_falls_back_to_newest_complete_checkpoint_and_summary_covers_run(
    tmp_path, tiny_base_model, merged_tokenizer, tiny_cfg
):
    from safetensors.torch import load_file

    common = dict(tokenizer=merged_tokenizer, max_steps=6, save_steps=2, lora_dropout=0.0, block_size=32)
    data = data_path("corpus_zh.txt")
    straight = pretrain(tiny_cfg(tiny_base_model, data, output=tmp_path / "a", **common))
    out = tmp_path / "b"
    pretrain(tiny_cfg(tiny_base_model, data, output=out, **common))
    for p in out.iterdir():  # killed during the save of checkpoint-6: no final files,
        if p.name != "checkpoints":  # checkpoint-6 without its trainer_state.json
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    (out / "checkpoints" / "checkpoint-6" / "trainer_state.json").unlink()
    resumed = pretrain(tiny_cfg(tiny_base_model, data, output=out, resume=True, **common))
    assert resumed["resumed_from"] == 4 and resumed["steps"] == 6
    assert resumed["tokens"] == straight["tokens"] == 6 * 32
    assert resumed["first_loss"] == straight["first_loss"] and resumed["final_loss"] == pytest.approx(
        straight["final_loss"], abs=1e-6
    )
    saved = json.loads((out / "train_summary.json").read_text())
    assert saved["tokens"] == 6 * 32 and saved["seconds"] >= resumed["seconds"] - 1e-9
    a, b = load_file(tmp_path / "a" / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)


@pytest.fixture(scope="module")
def short_model(tmp_path_factory, merged_tokenizer):
    from zhllama.core.tiny import TinyShape, build_tiny_llama

    return build_tiny_llama(
        tmp_path_factory.mktemp("short") / "m", tokenizer=merged_tokenizer, shape=TinyShape(max_position_embeddings=32)
    )


@pytest.mark.parametrize("full", [False, True])
def test_rope_scaling_is_trained_and_written(tmp_path, short_model, tiny_cfg, full):
    from transformers import AutoConfig

    cfg = tiny_cfg(
        short_model,
        data_path("corpus_zh.txt"),
        max_steps=2,
        full=full,
        rope_scaling="linear",
        rope_factor=4.0,
        block_size=128,  # 4x the model's 32 positions
    )
    summary = pretrain(cfg)
    expected = {
        "rope_scaling": {"rope_type": "linear", "type": "linear", "factor": 4.0},
        "max_position_embeddings": 128,
    }
    assert summary["config_overrides"] == expected
    if full:
        config = AutoConfig.from_pretrained(cfg.output)
        assert config.max_position_embeddings == 128
        assert config.rope_parameters["rope_type"] == "linear" and config.rope_parameters["factor"] == 4.0
        assert not (cfg.output / "zhllama_overrides.json").exists()
    else:
        assert json.loads((cfg.output / "zhllama_overrides.json").read_text()) == {"config": expected}


def test_rope_scaled_lora_carries_into_merged_config_and_gguf(tmp_path, short_model, tiny_cfg, run_cli):
    """Issue 13's training recipe end to end: train at 4x, merge, GGUF (merge/GGUF are `zhllama merge`'s
    and `quantize gguf`'s; this checks the contract `zhllama_overrides.json` between them)."""
    import gguf
    from transformers import AutoConfig

    cfg = tiny_cfg(
        short_model,
        data_path("corpus_zh.txt"),
        max_steps=1,
        rope_scaling="linear",
        rope_factor=4.0,
        block_size=128,
    )
    pretrain(cfg)
    merged = tmp_path / "merged"
    code, _, err = run_cli("merge", "--base", short_model, "--lora", cfg.output, "--output", merged)
    assert code == 0, err
    config = AutoConfig.from_pretrained(merged)
    assert config.max_position_embeddings == 128
    assert config.rope_parameters["rope_type"] == "linear" and config.rope_parameters["factor"] == 4.0
    code, _, err = run_cli("quantize", "gguf", "--model", merged, "--type", "F16", "--output", tmp_path / "m.gguf")
    assert code == 0, err
    fields = gguf.GGUFReader(tmp_path / "m.gguf").fields
    value = lambda key: fields[key].contents()  # noqa: E731
    assert value("llama.rope.scaling.type") == "linear" and value("llama.rope.scaling.factor") == 4.0
    assert value("llama.context_length") == 128


def test_yarn_records_the_original_length_and_refuses_a_second_scaling(tmp_path, short_model, tiny_cfg):
    from zhllama.core.training.model import load_model

    cfg = tiny_cfg(short_model, data_path("corpus_zh.txt"), rope_scaling="yarn", rope_factor=2.0, model_max_length=60)
    model, overrides = load_model(cfg)
    assert overrides["rope_scaling"]["original_max_position_embeddings"] == 32
    assert model.config.rope_parameters["rope_type"] == "yarn" and model.config.max_position_embeddings == 60
    scaled = tmp_path / "scaled"
    model.save_pretrained(scaled)
    shutil.copy(short_model / "tokenizer.model", scaled)
    with pytest.raises(UserError, match="already has rope scaling yarn"):
        load_model(dataclasses.replace(cfg, model=scaled))


def test_streaming_pretrain_and_packed_sft_train(tmp_path, tiny_zh_model, tiny_cfg):
    from zhllama.core.training import sft

    summary = pretrain(tiny_cfg(tiny_zh_model, data_path("corpus_zh.txt"), streaming=True, max_steps=3, block_size=32))
    assert summary["steps"] == 3 and summary["tokens"] == 3 * 32 and summary["train_examples"] is None
    cfg = tiny_cfg(
        tiny_zh_model,
        data_path("conversations.jsonl"),
        output=tmp_path / "sft",
        config=SftConfig,
        streaming=True,
        max_steps=2,
        packing=True,
        max_seq_length=256,
    )
    assert sft(cfg)["steps"] == 2
    assert not (tmp_path / "cache").exists()  # streaming writes no cache


def test_a_task_runs_its_own_config_class(tiny_base_model, tmp_path):
    """A plain TrainConfig lacks the task's own fields (block_size ...): a programming error, said at once."""
    cfg = TrainConfig(model=tiny_base_model, output=tmp_path / "o", data=[data_path("corpus_zh.txt")])
    with pytest.raises(TypeError, match="pretrain runs a PretrainConfig, got a TrainConfig"):
        pretrain(cfg)
    assert not (tmp_path / "o").exists()
