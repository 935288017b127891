"""The transformers engine: HF model folders on CPU (or whatever torch runs on), LoRA, 4/8-bit.

Behaviour:
- Loads with `trust_remote_code=False`, float32 unless `dtype` says otherwise; `load="4bit"` (NF4)
  or `"8bit"` goes through bitsandbytes' `BitsAndBytesConfig` with `device_map="cpu"`.
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

from zhllama.core.engine import GenerationParams, LoadedModel, LoadOptions
from zhllama.core.errors import MissingDependencyError, UserError
from zhllama.core.generation import rope
from zhllama.core.generation.loop import decode

DTYPES = ("float32", "bfloat16", "float16")
TOKENIZER_MARKERS = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json")


class TransformersEngine:
    name = "transformers"
    description = "HF model folders through transformers (PEFT LoRA, bitsandbytes 4/8-bit)"
    requires = ("torch", "transformers")
    install_hint = "pip install zhllama"

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return Path(path).is_dir() and (Path(path) / "config.json").is_file()

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> TransformersModel:
        return TransformersModel.load(Path(path), options)


def _torch_dtype(name: str | None):
    import torch

    name = name or "float32"
    if name not in DTYPES:
        raise UserError(f"--dtype: unknown dtype '{name}' (expected one of {', '.join(DTYPES)})")
    return getattr(torch, name)


def _quantization(load: str | None, dtype):
    if load is None:
        return None
    if load not in ("4bit", "8bit"):
        raise UserError(f"--load: expected 4bit or 8bit, got '{load}'")
    from zhllama.core.registry import missing_modules

    if missing_modules(("bitsandbytes",)):
        raise MissingDependencyError("--load needs bitsandbytes; install it with: pip install 'zhllama[bnb]'")
    from transformers import BitsAndBytesConfig

    if load == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


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
                input_ids=torch.tensor([list(ids)], dtype=torch.long),
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
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.auto_ntk = auto_ntk
        eos = getattr(model.generation_config, "eos_token_id", None) if model.generation_config else None
        self.extra_stops = tuple(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    @classmethod
    def load(cls, path: Path, options: LoadOptions) -> TransformersModel:
        from transformers import AutoConfig, AutoModelForCausalLM

        from zhllama.core.tokenizer import ZhTokenizer

        if not TransformersEngine.accepts(path):
            raise UserError(f"{path}: not a transformers model folder (config.json missing)")
        for lora in options.lora:
            if not (Path(lora) / "adapter_config.json").is_file():
                raise UserError(f"{lora}: not a LoRA adapter folder (adapter_config.json missing)")
        dtype = _torch_dtype(options.dtype)
        quant = _quantization(options.load, dtype)
        try:
            config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}/config.json: cannot load: {exc}") from exc
        plan = rope.configure(config, options.rope_scaling, options.rope_factor)
        kwargs = {"config": config, "dtype": dtype, "trust_remote_code": False}
        if quant is not None:
            kwargs.update(quantization_config=quant, device_map="cpu")
        try:
            model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: cannot load model: {exc}") from exc
        tokenizer = ZhTokenizer(_tokenizer_dir(path, options.lora))
        model = _apply_loras(model, options.lora, len(tokenizer), merge=quant is None)
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
        with torch.inference_mode():
            out = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=1
            )
        return out.logits[:, -1].float()

    def generate(self, prompt_ids: Sequence[int], params: GenerationParams) -> Iterator[int]:
        return decode(self.session(), self.tokenizer, prompt_ids, params, self.extra_stops)


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
