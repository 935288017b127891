"""Grow the embedding matrix for a larger tokenizer, initialising new rows from the base tokenizer.

The reference scripts resize with random rows. A better start: a new piece's row is the mean of
the base-model rows of the pieces the *base* tokenizer splits that piece's text into (the model
already "knows" those), falling back to the mean of all rows. The same rule is used for lm_head.
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


def init_rows(weight: torch.Tensor, old_rows: int, new_tokenizer: ZhTokenizer, base: ZhTokenizer) -> None:
    """Fill rows old_rows.. of `weight` in place: mean of base pieces, else mean of all old rows."""
    with torch.no_grad():
        fallback = weight[:old_rows].float().mean(dim=0)
        for idx in range(old_rows, weight.shape[0]):
            ids = base_pieces_for(new_tokenizer.id_to_piece(idx), base) if idx < len(new_tokenizer) else []
            ids = [i for i in ids if i < old_rows]
            row = weight[ids].float().mean(dim=0) if ids else fallback
            weight[idx] = row.to(weight.dtype)


def resize_for_tokenizer(model, tokenizer: ZhTokenizer, base_tokenizer: ZhTokenizer | None, multiple: int = 64) -> bool:
    """Resize input/output embeddings when the tokenizer is larger than the model's vocabulary.

    Returns True when the model was resized. A tokenizer *smaller* than the matrix is fine (padding
    rows); a base tokenizer is needed to initialise rows smartly (else all new rows get the mean).
    """
    old_rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= old_rows:
        return False
    if base_tokenizer is not None and len(base_tokenizer) > old_rows:
        raise UserError(
            f"base tokenizer has {len(base_tokenizer)} pieces but the model only {old_rows} embedding rows: "
            "they do not belong together"
        )
    if base_tokenizer is not None:
        for i in range(min(len(base_tokenizer), 300)):
            if base_tokenizer.id_to_piece(i) != tokenizer.id_to_piece(i):
                raise UserError(
                    f"tokenizer piece {i} ('{tokenizer.id_to_piece(i)}') differs from the model's tokenizer "
                    f"('{base_tokenizer.id_to_piece(i)}'): the new tokenizer must extend the model's, not replace it"
                )
    new_rows = padded_size(len(tokenizer), multiple)
    model.resize_token_embeddings(new_rows, mean_resizing=False)
    base = base_tokenizer if base_tokenizer is not None else tokenizer
    init_rows(model.get_input_embeddings().weight, old_rows, tokenizer, base)
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        init_rows(output.weight, old_rows, tokenizer, base)
    model.config.vocab_size = new_rows
    return True
