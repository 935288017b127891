"""The transformers engine: HF model folders on the GPU when present (else CPU), LoRA, 4/8-bit.

Behaviour:
- Placement and dtype come from `core.loading` (`--device auto`: the GPU when present, several GPUs
  spread with `device_map="auto"`; bf16 on GPU, fp16 where bf16 is unsupported, fp32 on CPU).
- `load="4bit"` (NF4) or `"8bit"` goes through the one bitsandbytes builder
  (`core.loading.quantization`), on GPU or CPU; on CPU, layers the 4-bit kernels cannot take stay in
  full precision and are named in a warning.
- `lora` adapters (PEFT folders) are applied in order; on a full-precision model they are merged
  into the weights (plain-model speed), on a quantized one they stay as adapters. A tokenizer
  shipped in the last adapter folder wins (Chinese-LLaMA LoRAs carry the extended vocabulary),
  and the base embeddings are resized to it first, as the reference scripts do.
- `next_token_logits(batch)` left-pads with the pad id, masks the padding and gives every sequence
  position ids 0..n-1, so a batched result equals running each sequence alone.
- `generate` runs the shared loop (`core.generation.loop`) over a KV cache, one token per step.
- RoPE scaling (`rope_scaling`/`rope_factor`) is applied to the config before the model is built;
  `ntk auto` updates the rotary frequencies at every step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from zhllama.core.engine import GenerationParams, LoadedModel
from zhllama.core.errors import UserError
from zhllama.core.generation import rope
from zhllama.core.generation.loop import decode
from zhllama.core.loading.options import ModelOptions
from zhllama.core.plugin_api import EnginePlugin

TOKENIZER_MARKERS = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json")


class TransformersEngine(EnginePlugin):
    name = "transformers"
    description = "HF model folders through transformers (PEFT LoRA, bitsandbytes 4/8-bit)"
    requires = ("torch", "transformers")
    install_hint = "pip install zhllama"

    priority = 10  # automatic choice: HF folders (vllm opens the same ones, at priority 0)
    resolves_sources = True  # hub ids, Meta/TencentPretrain folders -> HF folders first

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return Path(path).is_dir() and (Path(path) / "config.json").is_file()

    @classmethod
    def load(cls, path: Path, options: ModelOptions) -> TransformersModel:
        return TransformersModel.load(Path(path), options)


def _check_attention(attn: str, on_gpu: bool) -> None:
    """flash_attention_2 needs the flash-attn package and a GPU; say so before loading."""
    if attn != "flash_attention_2":
        return
    from zhllama.core.registry import missing_modules

    if missing_modules(("flash_attn",)):
        raise UserError("--attn flash_attention_2: needs the flash-attn package (pip install flash-attn)")
    if not on_gpu:
        raise UserError("--attn flash_attention_2: runs on CUDA GPUs only; use sdpa on CPU")


def _tokenizer_dir(path: Path, loras: Sequence[str]) -> Path:
    for lora in reversed([Path(p) for p in loras]):
        if any((lora / f).is_file() for f in TOKENIZER_MARKERS):
            return lora
    return path


class HFSession:
    """One sequence's KV cache on a transformers model (see `core.generation.loop.Session`)."""

    def __init__(self, owner: TransformersModel):
        from transformers import DynamicCache

        self.owner = owner
        self.cache = DynamicCache(config=owner.model.config)
        self.length = 0

    def feed(self, ids: Sequence[int], all_logits: bool = False):
        import torch

        if self.owner.auto_ntk is not None:
            self.owner.auto_ntk.update(self.length + len(ids))
        with torch.inference_mode():
            out = self.owner.model(
                input_ids=torch.tensor([list(ids)], dtype=torch.long, device=self.owner.device),
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=0 if all_logits else 1,
            )
        self.length += len(ids)
        return out.logits[0].float() if all_logits else out.logits[0, -1].float()

    def rollback(self, length: int) -> None:
        if length < self.length:
            self.cache.crop(length - self.length)  # transformers 5: a negative count removes tokens
        self.length = length


class TransformersModel(LoadedModel):
    def __init__(self, model, tokenizer, context_length: int, auto_ntk: rope.AutoNTK | None = None):
        self.model = model
        self.device = model.get_input_embeddings().weight.device
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.auto_ntk = auto_ntk
        eos = getattr(model.generation_config, "eos_token_id", None) if model.generation_config else None
        self.extra_stops = tuple(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    @classmethod
    def load(cls, path: Path, options: ModelOptions) -> TransformersModel:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        from zhllama.core.loading.device import placement
        from zhllama.core.loading.quantization import quantization_for
        from zhllama.core.tokenizer import ZhTokenizer

        if not TransformersEngine.accepts(path):
            raise UserError(f"{path}: not a transformers model folder (config.json missing)")
        from zhllama.core.checkpoint.validate import validate_adapter_dir

        for lora in options.lora:  # config, weights' headers, pickles: checked before loading (reliab)
            validate_adapter_dir(lora)
        where = placement(options.device, options.dtype)
        _check_attention(options.attn, where.on_gpu)
        try:
            config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}/config.json: cannot load: {exc}") from exc
        plan = rope.configure(config, options.rope_scaling, options.rope_factor)
        quant = quantization_for(options.load, config, where.on_gpu, where.dtype)
        kwargs = {
            "config": config,
            "dtype": getattr(torch, where.dtype),
            "trust_remote_code": False,
            "attn_implementation": options.attn,
        }
        device_map = where.device_map if where.on_gpu else ("cpu" if quant is not None else None)
        if device_map is not None:
            kwargs["device_map"] = device_map
        if quant is not None:
            kwargs["quantization_config"] = quant
        try:
            model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: cannot load model: {exc}") from exc
        tokenizer = ZhTokenizer(_tokenizer_dir(path, options.lora))
        try:
            model = _apply_loras(model, options.lora, len(tokenizer), merge=quant is None)
        except RuntimeError as exc:  # an adapter trained for another base: the user's mistake
            detail = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), None)
            if detail is None:
                raise
            raise UserError(f"{', '.join(map(str, options.lora))}: adapter does not fit {path}: {detail}") from exc
        model.eval()
        auto = rope.AutoNTK(model.get_decoder().rotary_emb, plan) if plan.auto else None
        return cls(model, tokenizer, options.context_length or plan.context_length, auto)

    def session(self) -> HFSession:
        return HFSession(self)

    def next_token_logits(self, batch: Sequence[Sequence[int]]):
        import torch

        if not batch or any(len(seq) == 0 for seq in batch):
            raise ValueError("next_token_logits needs non-empty sequences")
        width = max(len(seq) for seq in batch)
        ids = torch.full((len(batch), width), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if self.auto_ntk is not None:
            self.auto_ntk.update(width)
        ids, mask, positions = (t.to(self.device) for t in (ids, mask, positions))
        with torch.inference_mode():
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=1
            )
        return out.logits[:, -1].float()

    def next_token_logits_with_prefix(self, prefix: Sequence[int], suffixes: Sequence[Sequence[int]]):
        """The shared prefix is run once (batch 1) and its KV cache is repeated over the batch;
        suffixes are left-padded after it, pads masked, positions continuing from the prefix."""
        import copy

        import torch
        from transformers import DynamicCache

        if not prefix or not suffixes or any(len(s) == 0 for s in suffixes):
            raise ValueError("next_token_logits_with_prefix needs a prefix and non-empty suffixes")
        if self.auto_ntk is not None:  # the rope scale depends on the full length: no reuse
            return super().next_token_logits_with_prefix(prefix, suffixes)
        key = tuple(prefix)
        if getattr(self, "_prefix_key", None) != key:
            cache = DynamicCache(config=self.model.config)
            with torch.inference_mode():
                self.model(
                    input_ids=torch.tensor([list(prefix)], dtype=torch.long, device=self.device),
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
            self._prefix_key, self._prefix_cache = key, cache
        width = max(len(s) for s in suffixes)
        ids = torch.full((len(suffixes), width), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.ones((len(suffixes), len(prefix) + width), dtype=torch.long)
        for row, seq in enumerate(suffixes):
            ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, len(prefix) : len(prefix) + width - len(seq)] = 0
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, len(prefix) :]
        cache = copy.deepcopy(self._prefix_cache)
        cache.batch_repeat_interleave(len(suffixes))
        ids, mask, positions = (t.to(self.device) for t in (ids, mask, positions))
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1].float()

    def generate(self, prompt_ids: Sequence[int], params: GenerationParams, stopper=None) -> Iterator[int]:
        return decode(self.session(), self.tokenizer, prompt_ids, params, self.extra_stops, stopper)


def _apply_loras(model, loras: Sequence[str], vocab_size: int, merge: bool):
    if not loras:
        return model
    from peft import PeftModel

    if model.get_input_embeddings().weight.shape[0] != vocab_size:
        model.resize_token_embeddings(vocab_size)
    if merge:
        for lora in loras:
            model = PeftModel.from_pretrained(model, str(lora), is_trainable=False).merge_and_unload()
        return model
    names = [f"lora{i}" for i in range(len(loras))]
    model = PeftModel.from_pretrained(model, str(loras[0]), adapter_name=names[0], is_trainable=False)
    for name, lora in zip(names[1:], loras[1:], strict=True):
        model.load_adapter(str(lora), adapter_name=name, is_trainable=False)
    model.base_model.set_adapter(names)
    return model
