"""Grow the embedding matrix for a larger tokenizer, initialising new rows from the base tokenizer.

The reference scripts resize with random rows. A better start: a new piece's row is the mean of
the base-model rows of the pieces the *base* tokenizer splits that piece's text into (the model
already "knows" those), falling back to the mean of all rows. The same rule is used for lm_head.

Byte-level BPE (Llama-3, Qwen, SmolLM2): a new token stands for bytes, often part of a character,
so its base pieces are what the base's own BPE model makes of those bytes (`model.tokenize` on the
byte-level string), exact on bytes; added/special tokens get the mean. New ids start after the
*base tokenizer* (Qwen's matrix has unused rows past its tokenizer: new tokens land there and are
initialised too).
"""

from __future__ import annotations

import math

import torch

from zhllama.core.errors import UserError
from zhllama.core.tokenizer import ZhTokenizer

SPIECE_UNDERLINE = "▁"


def padded_size(vocab: int, multiple: int = 64) -> int:
    return int(math.ceil(vocab / multiple) * multiple)


def base_pieces_for(new_piece: str, base: ZhTokenizer) -> list[int]:
    """Base-tokenizer ids for the text of `new_piece` (the dummy-prefix '▁' is not kept for inner pieces)."""
    text = new_piece.replace(SPIECE_UNDERLINE, " ")
    ids = base.encode(text)
    if not new_piece.startswith(SPIECE_UNDERLINE) and ids and base.id_to_piece(ids[0]) == SPIECE_UNDERLINE:
        ids = ids[1:]
    return ids


def byte_level(tokenizer: ZhTokenizer) -> bool:
    """A tokenizer.json byte-level BPE (no SentencePiece model behind it)."""
    if tokenizer.sp is not None or tokenizer.hf is None:
        return False
    backend = getattr(tokenizer.hf, "backend_tokenizer", None)
    return backend is not None and type(backend.model).__name__ == "BPE" and "ByteLevel" in str(backend.decoder)


def byte_level_pieces_for(idx: int, new_tokenizer: ZhTokenizer, base: ZhTokenizer) -> list[int]:
    """Base ids of the bytes of new token `idx` (the base BPE model on its byte-level string)."""
    if idx in new_tokenizer.hf.added_tokens_decoder:
        return []
    piece = new_tokenizer.id_to_piece(idx)
    if not piece:
        return []
    try:
        return [t.id for t in base.hf.backend_tokenizer.model.tokenize(piece)]
    except Exception:  # a character outside the byte alphabet: no base pieces
        return []


def init_rows(
    weight: torch.Tensor, old_rows: int, new_tokenizer: ZhTokenizer, base: ZhTokenizer, stop: int | None = None
) -> None:
    """Fill rows old_rows..stop (default: all) of `weight` in place: mean of base pieces, else mean of all old rows."""
    by_bytes = byte_level(new_tokenizer) and byte_level(base)
    with torch.no_grad():
        fallback = weight[:old_rows].float().mean(dim=0)
        for idx in range(old_rows, weight.shape[0] if stop is None else stop):
            if idx >= len(new_tokenizer):
                ids = []
            elif by_bytes:
                ids = byte_level_pieces_for(idx, new_tokenizer, base)
            else:
                ids = base_pieces_for(new_tokenizer.id_to_piece(idx), base)
            ids = [i for i in ids if i < old_rows]
            row = weight[ids].float().mean(dim=0) if ids else fallback
            weight[idx] = row.to(weight.dtype)


def _check_extends(tokenizer: ZhTokenizer, base_tokenizer: ZhTokenizer) -> None:
    for i in range(min(len(base_tokenizer), 300)):
        if base_tokenizer.id_to_piece(i) != tokenizer.id_to_piece(i):
            raise UserError(
                f"tokenizer piece {i} ('{tokenizer.id_to_piece(i)}') differs from the model's tokenizer "
                f"('{base_tokenizer.id_to_piece(i)}'): the new tokenizer must extend the model's, not replace it"
            )


def resize_for_tokenizer(model, tokenizer: ZhTokenizer, base_tokenizer: ZhTokenizer | None, multiple: int = 64) -> bool:
    """Resize input/output embeddings when the tokenizer is larger than the model's vocabulary.

    Returns True when the model was resized. A tokenizer *smaller* than the matrix is fine (padding
    rows); a base tokenizer is needed to initialise rows smartly (else all new rows get the mean).
    """
    old_rows = model.get_input_embeddings().weight.shape[0]
    if base_tokenizer is not None and len(base_tokenizer) > old_rows:
        if len(tokenizer) <= old_rows:
            return False
        raise UserError(
            f"base tokenizer has {len(base_tokenizer)} pieces but the model only {old_rows} embedding rows: "
            "they do not belong together"
        )
    # new ids start after the base tokenizer, which may be before the end of the matrix (Qwen)
    start = old_rows
    if base_tokenizer is not None and len(base_tokenizer) < min(len(tokenizer), old_rows):
        start = len(base_tokenizer)
    if len(tokenizer) <= old_rows and start == old_rows:
        return False
    if base_tokenizer is not None:
        _check_extends(tokenizer, base_tokenizer)
    base = base_tokenizer if base_tokenizer is not None else tokenizer
    new_rows = old_rows
    if len(tokenizer) > old_rows:
        new_rows = padded_size(len(tokenizer), multiple)
        model.resize_token_embeddings(new_rows, mean_resizing=False)
    stop = new_rows if len(tokenizer) > old_rows else len(tokenizer)
    init_rows(model.get_input_embeddings().weight, start, tokenizer, base, stop=stop)
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        init_rows(output.weight, start, tokenizer, base, stop=stop)
    model.config.vocab_size = new_rows
    return True
