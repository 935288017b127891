"""Fold LoRA adapters into a base checkpoint shard by shard (`zhllama merge`).

Memory stays at about one base shard plus the adapters: the base is read one shard at a time,
each tensor gets every adapter's delta (B @ A * scaling, in fp32) or full replacement tensor
(embed_tokens / lm_head saved through `modules_to_save`), and finished tensors are flushed into
output shards of `--shard-size`. Everything that cannot be merged exactly is found before any
output is written.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zhllama.core.atomic import atomic_dir
from zhllama.core.checkpoint import rope_config, safetensors_io
from zhllama.core.checkpoint.shards import (
    iter_model,
    load_bin,
    parse_size,
    plan_shards,
    read_config,
    write_hf_shards,
)
from zhllama.core.errors import UserError
from zhllama.core.paths import read_json, sha256_file

PREFIX = "base_model.model."
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
CONFIG_DTYPES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}


# ---- adapters -----------------------------------------------------------------------------------
@dataclass
class Adapter:
    path: Path
    config: dict
    lora: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=dict)  # base key -> (A, B, s)
    full: dict[str, torch.Tensor] = field(default_factory=dict)  # base key -> replacement tensor
    files: list[Path] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)  # zhllama_overrides.json "config" (rope, context)

    @property
    def is_sequence_classifier(self) -> bool:
        """A reward-model adapter (`zhllama rm`): it brings a new `score` head instead of `lm_head`."""
        return self.config.get("task_type") == "SEQ_CLS"


SCORE_HEAD = "score."  # the classification head of a *ForSequenceClassification model


def _load_state(path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    st, binf = path / "adapter_model.safetensors", path / "adapter_model.bin"
    if st.is_file():
        return dict(safetensors_io.iter_tensors(st)), st  # validated: a truncated file is refused
    if binf.is_file():
        return load_bin(binf), binf
    raise UserError(f"{path}: no adapter_model.safetensors or adapter_model.bin")


def _pattern_value(module: str, patterns: dict, default):
    """PEFT's rank_pattern / alpha_pattern lookup: a key matches a module name suffix (or regex)."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?{key}$", module):
            return value
    return default


def load_adapter(path: str | Path) -> Adapter:
    from zhllama.core.checkpoint.validate import validate_adapter_dir

    path = validate_adapter_dir(path)  # inside the folder, headers and pickles checked first
    cfg_file = path / "adapter_config.json"
    if not cfg_file.is_file():
        raise UserError(f"{path}: not a PEFT adapter folder (no adapter_config.json)")
    config = read_json(cfg_file)
    if config.get("peft_type") != "LORA":
        raise UserError(f"{cfg_file}: peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("use_dora"):
        raise UserError(f"{cfg_file}: DoRA adapters cannot be merged exactly by zhllama merge (use_dora=true)")
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise UserError(f"{cfg_file}: '{key}' missing or not a positive number")
    overrides = rope_config.read_overrides(path)
    state, file = _load_state(path)
    files = [cfg_file, file] + ([path / rope_config.OVERRIDES_FILE] if overrides else [])
    adapter = Adapter(path, config, files=files, overrides=overrides)
    r, alpha = config["r"], config["lora_alpha"]
    rslora = bool(config.get("use_rslora"))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    full_new: dict[str, torch.Tensor] = {}
    full_old: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = key[len(PREFIX) :] if key.startswith(PREFIX) else key
        if ".lora_embedding_A" in name or ".lora_embedding_B" in name:
            module = name.split(".lora_embedding_")[0]
            raise UserError(f"{path}: module '{module}' has LoRA on an embedding without full tensors; cannot merge")
        match = re.match(r"(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$", name)
        if match:
            pairs.setdefault(match.group(1), {})[match.group(2)] = tensor
        elif ".modules_to_save." in name:
            module = name.split(".modules_to_save.")[0]
            full_new[f"{module}.weight"] = tensor
        elif ".original_module." in name:
            continue
        elif name.endswith(".weight") or name.endswith(".bias"):
            full_old[name] = tensor  # older PEFT layout: the trained full tensor under its own name
    adapter.full = {**full_old, **full_new}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise UserError(f"{path}: module '{module}' lacks lora_{'B' if 'A' in ab else 'A'}")
        rank = _pattern_value(module, config.get("rank_pattern") or {}, r)
        mod_alpha = _pattern_value(module, config.get("alpha_pattern") or {}, alpha)
        scaling = mod_alpha / math.sqrt(rank) if rslora else mod_alpha / rank
        adapter.lora[f"{module}.weight"] = (ab["A"], ab["B"], scaling)
    return adapter


def lora_delta(a: torch.Tensor, b: torch.Tensor, scaling: float, fan_in_fan_out: bool) -> torch.Tensor:
    delta = (b.float() @ a.float()) * scaling
    return delta.T if fan_in_fan_out else delta


# ---- planning (all checks before any write) -------------------------------------------------------
LM_HEAD = "lm_head.weight"


def ties_embeddings(base: Path) -> bool:
    """Whether the base's LM head is its input embedding (SmolLM2, Llama-3.2-1B, small Qwen): such a
    checkpoint has no `lm_head.weight`, while PEFT's `modules_to_save` trains a separate copy of it."""
    return bool(read_config(base).get("tie_word_embeddings", False))


def plan(base: Path, adapters: list[Adapter], tokenizer_size: int | None) -> dict[str, tuple[int, ...]]:
    """Output shape of every tensor, in the order the base shards yield them; raises before any write."""
    shapes = plan_shards(base)
    new_shapes = dict(shapes)
    for adapter in adapters:
        fan = bool(adapter.config.get("fan_in_fan_out"))
        for key, tensor in adapter.full.items():
            if key not in new_shapes and adapter.is_sequence_classifier and key.startswith(SCORE_HEAD):
                new_shapes[key] = tuple(tensor.shape)  # the classification head the base does not have
                continue
            if key not in new_shapes and key == LM_HEAD and ties_embeddings(base):
                new_shapes[key] = tuple(tensor.shape)  # trained apart from the tied embedding: written untied
                continue
            if key not in new_shapes:
                raise UserError(f"{adapter.path}: module '{key.rsplit('.', 1)[0]}' is not in the base model")
            if tensor.shape[1:] != torch.Size(new_shapes[key][1:]):
                raise UserError(f"{adapter.path}: '{key}' has shape {tuple(tensor.shape)}, base {new_shapes[key]}")
            new_shapes[key] = tuple(tensor.shape)
        for key, (a, b, _) in adapter.lora.items():
            if key not in new_shapes:
                raise UserError(f"{adapter.path}: target module '{key.rsplit('.', 1)[0]}' is not in the base model")
            out_f, in_f = (a.shape[1], b.shape[0]) if fan else (b.shape[0], a.shape[1])
            if (out_f, in_f) != new_shapes[key]:
                raise UserError(
                    f"{adapter.path}: module '{key.rsplit('.', 1)[0]}' shape mismatch: LoRA gives {(out_f, in_f)}, "
                    f"base has {new_shapes[key]}"
                )
    if any(adapter.is_sequence_classifier for adapter in adapters):
        if not any(key.startswith(SCORE_HEAD) for key in new_shapes):
            raise UserError(f"{adapters[-1].path}: a SEQ_CLS adapter without its 'score' head (modules_to_save)")
        new_shapes.pop("lm_head.weight", None)  # a sequence classifier has a score head, not a LM head
    embed = next((k for k in new_shapes if k.endswith("embed_tokens.weight")), None)
    if embed is not None and tokenizer_size is not None:
        rows = new_shapes[embed][0]
        padded = -(-tokenizer_size // 64) * 64
        if rows < tokenizer_size or rows > max(padded, shapes[embed][0]):
            raise UserError(
                f"{adapters[-1].path}: embedding has {rows} rows but its tokenizer {tokenizer_size} pieces "
                "(was the adapter trained with this tokenizer?)"
            )
    return new_shapes


# ---- merge ----------------------------------------------------------------------------------------
@dataclass
class MergeResult:
    output: str
    tensors: int
    merged_lora: int
    replaced: int
    shards: int
    vocab_size: int
    dtype: str
    seconds: float
    verify_max_abs_diff: float | None = None


def _base_dtype(config: dict) -> str:
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32").replace("torch.", "")
    return CONFIG_DTYPES.get(name, "fp32")


def merged_config(config: dict, adapters: list[Adapter]) -> dict:
    """The base config with each adapter's zhllama_overrides.json applied in order."""
    for adapter in adapters:
        config = rope_config.apply_overrides(config, adapter.overrides)
    return config


def classifier_config(config: dict, shapes: dict[str, tuple[int, ...]], pad_id: int) -> dict:
    """The config of a sequence classifier (reward model) with the merged score head's labels."""
    labels = next(shape[0] for key, shape in shapes.items() if key.startswith(SCORE_HEAD))
    return {
        **config,
        "architectures": ["LlamaForSequenceClassification"],
        "id2label": {str(i): f"LABEL_{i}" for i in range(labels)},
        "label2id": {f"LABEL_{i}": i for i in range(labels)},
        "pad_token_id": pad_id,  # the classifier scores the last non-pad token
    }


def merge(
    base: str | Path,
    loras: list[str | Path],
    output: str | Path,
    dtype: str | None = None,
    shard_size: str = "2GB",
    tokenizer: str | Path | None = None,
    fmt: str = "hf",
    verify: bool = False,
    force: bool = False,
    progress=None,
) -> MergeResult:
    """Merge `loras` (in order) into `base` and write `output` (hf or pth layout).

    `base` may be any model source `resolve_model` accepts (HF folder, hub id, Meta checkpoint).
    Everything is read and checked (shards, adapters, tokenizer, sizes) before the first write.
    """
    from zhllama.core.checkpoint.sources import resolve_model
    from zhllama.core.loading.options import parse_dtype
    from zhllama.core.paths import check_output
    from zhllama.core.tokenizer import ZhTokenizer

    start = time.perf_counter()
    if not loras:
        raise UserError("--lora: give at least one adapter")
    if fmt not in ("hf", "pth"):
        raise UserError(f"--format: '{fmt}' is not hf or pth")
    if dtype is not None:
        dtype = CONFIG_DTYPES[parse_dtype(dtype)]
    limit = parse_size(shard_size)
    check_output(output, [base, *loras, tokenizer])
    base = resolve_model(base, folder_only=True)
    check_output(output, [base])
    config = read_config(base)
    dtype = dtype or _base_dtype(config)
    adapters = [load_adapter(p) for p in loras]
    tok_source = Path(tokenizer) if tokenizer else adapters[-1].path
    tok = ZhTokenizer(tok_source)
    shapes = plan(base, adapters, len(tok))
    config = merged_config(config, adapters)
    if any(adapter.is_sequence_classifier for adapter in adapters):
        config = classifier_config(config, shapes, tok.pad_id)
    elif LM_HEAD in shapes and config.get("tie_word_embeddings"):
        config["tie_word_embeddings"] = False  # the adapter's own LM head is written: keep what it learned
    embed_key = next((k for k in shapes if k.endswith("embed_tokens.weight")), None)
    vocab_size = shapes[embed_key][0] if embed_key else config.get("vocab_size")
    counts = {"tensors": 0, "lora": 0, "replaced": 0}
    target = DTYPES[dtype]

    def merged_tensors() -> Iterator[tuple[str, torch.Tensor]]:
        base_keys = set()
        for key, tensor in iter_model(base, progress):
            base_keys.add(key)
            if key not in shapes:  # lm_head of a base merged into a sequence classifier
                continue
            for adapter in adapters:
                if key in adapter.full:
                    tensor = adapter.full[key]
                    counts["replaced"] += 1
                if key in adapter.lora:
                    a, b, s = adapter.lora[key]
                    fan = bool(adapter.config.get("fan_in_fan_out"))
                    tensor = tensor.float() + lora_delta(a, b, s, fan)
                    counts["lora"] += 1
            counts["tensors"] += 1
            yield key, tensor.to(target).contiguous()
        for key in [k for k in shapes if k not in base_keys]:  # new heads, in plan order
            head = next(a.full[key] for a in reversed(adapters) if key in a.full)
            counts["tensors"] += 1
            counts["replaced"] += 1
            yield key, head.to(target).contiguous()

    with atomic_dir(output, force=force) as tmp:
        config["vocab_size"] = vocab_size
        config["dtype"] = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}[dtype]
        config.pop("torch_dtype", None)
        if fmt == "hf":
            n_shards = write_hf_shards(merged_tensors(), shapes, target, tmp, limit)
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            gen = base / "generation_config.json"
            if gen.is_file():
                shutil.copyfile(gen, tmp / "generation_config.json")
            else:
                gen_cfg = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
                (tmp / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2) + "\n")
        else:
            from zhllama.core.checkpoint.pth import write_pth

            n_shards = write_pth(merged_tensors(), config, tmp)
        tok.save(tmp)
        max_diff = None
        if verify and fmt == "hf":
            max_diff = verify_against_peft(base, [a.path for a in adapters], tmp, vocab_size, len(tok))
        seconds = time.perf_counter() - start
        manifest = {
            "base": str(base),
            "adapters": [{"path": str(a.path), "sha256": {f.name: sha256_file(f) for f in a.files}} for a in adapters],
            "tokenizer": str(tok_source),
            "dtype": dtype,
            "format": fmt,
            "rope": rope_config.describe(config),
            "outputs": {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()},
            "seconds": seconds,
            "verify_max_abs_diff": max_diff,
        }
        (tmp / "zhllama-merge.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return MergeResult(
        str(output),
        counts["tensors"],
        counts["lora"],
        counts["replaced"],
        n_shards,
        int(vocab_size),
        dtype,
        seconds,
        max_diff,
    )


def verify_against_peft(base: Path, adapters: list[Path], merged: Path, vocab_size: int, tok_size: int) -> float:
    """Max |logits| difference between PEFT (base + adapters, merged one by one) and the merged folder.

    The merged folder's config carries the adapters' rope overrides; the reference gets the same.
    """
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    merged_cfg = AutoConfig.from_pretrained(str(merged))
    ref_cfg = AutoConfig.from_pretrained(str(base))
    ref_cfg.rope_parameters = merged_cfg.rope_parameters
    ref_cfg.max_position_embeddings = merged_cfg.max_position_embeddings
    auto = AutoModelForCausalLM
    if "LlamaForSequenceClassification" in (merged_cfg.architectures or []):
        auto = AutoModelForSequenceClassification  # a reward model: compare scores, not LM logits
        ref_cfg.id2label, ref_cfg.label2id = merged_cfg.id2label, merged_cfg.label2id
        ref_cfg.pad_token_id = merged_cfg.pad_token_id
    ref = auto.from_pretrained(str(base), config=ref_cfg, dtype=torch.float32)
    for path in adapters:
        rows = _adapter_rows(path)
        if rows is not None and rows != ref.get_input_embeddings().weight.shape[0]:
            ref.resize_token_embeddings(rows, mean_resizing=False)
        ref = PeftModel.from_pretrained(ref, str(path)).merge_and_unload()
    ours = auto.from_pretrained(str(merged), dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    probe = torch.randint(0, min(vocab_size, tok_size), (2, 16), generator=gen)
    with torch.no_grad():
        return float((ref(probe).logits - ours(probe).logits).abs().max())


def _adapter_rows(path: Path) -> int | None:
    adapter = load_adapter(path)
    for key, tensor in adapter.full.items():
        if key.endswith("embed_tokens.weight"):
            return tensor.shape[0]
    return None
