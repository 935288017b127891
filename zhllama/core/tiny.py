"""Tiny, seeded LLaMA checkpoints for tests, demos and benchmarks (no download, well under a second)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from zhllama.core.atomic import atomic_dir
from zhllama.core.errors import UserError
from zhllama.core.schema import option


@dataclass(frozen=True)
class TinyShape:
    """Layer sizes; every linear layer's width is a multiple of 32, as in real LLaMA models.

    bitsandbytes' packed CPU 4-bit kernels (CPUs with AVX512-BF16) need out_features % 32 == 0;
    real sizes (4096, 11008, 5120, 13824) qualify, so the tiny models do too. Odd sizes are tested
    on purpose elsewhere (graceful fallback to full precision).
    """

    hidden_size: int = option(64, "Hidden size.")
    intermediate_size: int = option(192, "MLP width.")
    num_hidden_layers: int = option(2, "Decoder layers.", "--layers")
    num_attention_heads: int = option(4, "Attention heads (must divide --hidden-size).", "--heads")
    num_key_value_heads: int = option(2, "Key/value heads (must divide --heads).", "--kv-heads")
    max_position_embeddings: int = option(2048, "Trained context length.", "--max-position-embeddings")
    rope_theta: float = option(10000.0, "RoPE base.")
    tie_word_embeddings: bool = option(False, "Share input and output embeddings.")

    def validated(self) -> TinyShape:
        """Raise `UserError` naming the first impossible size."""
        for flag, value in (
            ("--hidden-size", self.hidden_size),
            ("--intermediate-size", self.intermediate_size),
            ("--layers", self.num_hidden_layers),
            ("--heads", self.num_attention_heads),
            ("--kv-heads", self.num_key_value_heads),
            ("--max-position-embeddings", self.max_position_embeddings),
        ):
            if value < 1:
                raise UserError(f"{flag}: must be at least 1, got {value}")
        if self.hidden_size % self.num_attention_heads:
            raise UserError(f"--heads {self.num_attention_heads}: must divide --hidden-size {self.hidden_size}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise UserError(f"--kv-heads {self.num_key_value_heads}: must divide --heads {self.num_attention_heads}")
        if self.rope_theta <= 0:
            raise UserError(f"--rope-theta: must be positive, got {self.rope_theta}")
        return self


def tiny_llama_config(vocab_size: int, shape: TinyShape = TinyShape(), bos_id: int = 1, eos_id: int = 2, pad_id=None):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        rope_theta=shape.rope_theta,
        tie_word_embeddings=shape.tie_word_embeddings,
        rms_norm_eps=1e-6,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        hidden_act="silu",
    )


def build_tiny_llama(
    output: str | Path,
    tokenizer: str | Path | None = None,
    vocab_size: int | None = None,
    seed: int = 0,
    shape: TinyShape = TinyShape(),
    dtype: str = "float32",
    force: bool = False,
) -> Path:
    """Write a random LLaMA checkpoint (safetensors) sized for `tokenizer` (or `vocab_size`).

    The tokenizer files are copied next to the weights so the folder is a complete model.
    """
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    from zhllama.core.tokenizer import ZhTokenizer

    tok = ZhTokenizer(tokenizer) if tokenizer is not None else None
    if vocab_size is None:
        if tok is None:
            raise ValueError("give a tokenizer or a vocab_size")
        vocab_size = len(tok)
    bos = tok.bos_id if tok else 1
    eos = tok.eos_id if tok else 2
    config = tiny_llama_config(vocab_size, shape, bos_id=bos, eos_id=eos)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        bos_token_id=bos, eos_token_id=eos, pad_token_id=tok.pad_id if tok else 0
    )
    with atomic_dir(output, force=force) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tok is not None:
            tok.save(tmp)
        (tmp / "zhllama-tiny.json").write_text(json.dumps({"seed": seed, "shape": asdict(shape)}, indent=2) + "\n")
    return Path(output)
