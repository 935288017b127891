"""The tokenizer every zhllama command uses.

When a folder holds a `tokenizer.model`, text is encoded by sentencepiece itself: that is the
reference semantics of LLaMA-family tokenizers, and the only exact one for vocabularies whose
merged pieces tie in score (the reference merge, Chinese-LLaMA-2). The HF tokenizer from the same
folder is still loaded for what only it has (special-token names, saving, `Trainer`).
Folders without a SentencePiece model (e.g. GPT-2-style BPE) use the HF tokenizer alone.

Special-token strings inside text (`<s>`, `</s>`, `<unk>`, ...) are plain text by default: a
document or answer that quotes `</s>` cannot end a sequence. `legacy=True` is the reference
switch (every `cla2` code path uses it): text is read as transformers 4.x's slow `LlamaTokenizer`
with `legacy=True` reads it (what Chinese-LLaMA-Alpaca-2's scripts ran), and ids decode as its
`decode` does. See `encode` and `decode`.
"""

from __future__ import annotations

import re
import shutil
from functools import cached_property
from pathlib import Path

from zhllama.core.errors import UserError

TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


class ZhTokenizer:
    """Encode/decode with sentencepiece semantics; expose ids of the special tokens."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: tokenizer not found")
        self.path = path
        self.sp = None
        self.hf = None
        model_file = path if path.is_file() else path / "tokenizer.model"
        if model_file.is_file():
            import sentencepiece as spm

            from zhllama.core.spm import load_proto

            load_proto(model_file)  # clear error for a file that is not a SentencePiece model
            self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        if path.is_dir():
            if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
                raise UserError(f"{path}: no tokenizer files (tokenizer.model / tokenizer.json) in this folder")
            from transformers import AutoTokenizer

            try:
                self.hf = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
            except Exception as exc:
                if self.sp is None:
                    raise UserError(f"{path}: cannot load tokenizer: {exc}") from exc

    # ---- ids -------------------------------------------------------------------------------
    def __len__(self) -> int:
        if self.hf is not None:
            return len(self.hf)
        return self.sp.get_piece_size()

    def _hf_id(self, name: str) -> int | None:
        if self.hf is None:
            return None
        value = getattr(self.hf, f"{name}_token_id", None)
        return value if isinstance(value, int) else None

    def _sp_id(self, name: str) -> int | None:
        if self.sp is None:
            return None
        value = getattr(self.sp, f"{name}_id")()
        return value if value >= 0 else None

    @cached_property
    def bos_id(self) -> int | None:
        return self._hf_id("bos") if self._hf_id("bos") is not None else self._sp_id("bos")

    @cached_property
    def eos_id(self) -> int | None:
        return self._hf_id("eos") if self._hf_id("eos") is not None else self._sp_id("eos")

    @cached_property
    def unk_id(self) -> int | None:
        return self._hf_id("unk") if self._hf_id("unk") is not None else self._sp_id("unk")

    @cached_property
    def pad_id(self) -> int:
        """The pad id; tokenizers without one pad with unk (as LLaMA did), else with eos."""
        for candidate in (self._hf_id("pad"), self._sp_id("pad"), self.unk_id, self.eos_id):
            if candidate is not None:
                return candidate
        return 0

    # ---- special tokens and the chat template ----------------------------------------------
    @cached_property
    def special_tokens(self) -> dict[str, int]:
        """Text -> id of every token that text never produces by itself: the tokenizer's added
        tokens (`<|im_start|>`...), BOS/EOS/UNK/PAD and SentencePiece control pieces."""
        out: dict[str, int] = {}
        if self.sp is not None:
            for idx in range(self.sp.get_piece_size()):
                if self.sp.is_control(idx) or self.sp.is_unknown(idx):
                    out[self.sp.id_to_piece(idx)] = idx
        if self.hf is not None:
            for idx, token in self.hf.added_tokens_decoder.items():
                out[token.content] = idx
        return out

    @cached_property
    def special_tokens_map(self) -> dict[str, str]:
        """The special-token variables a chat template sees (`bos_token`, `eos_token`, ...)."""
        if self.hf is not None:
            return {k: v for k, v in self.hf.special_tokens_map.items() if isinstance(v, str)}
        names = {"bos_token": self.bos_id, "eos_token": self.eos_id, "unk_token": self.unk_id}
        return {k: self.sp.id_to_piece(v) for k, v in names.items() if v is not None}

    @cached_property
    def chat_template(self) -> str | None:
        """The model's own chat template (tokenizer_config.json `chat_template` or chat_template.jinja)."""
        template = getattr(self.hf, "chat_template", None) if self.hf is not None else None
        if isinstance(template, dict):
            template = template.get("default")
        if not template and self.path.is_dir() and (self.path / "chat_template.jinja").is_file():
            template = (self.path / "chat_template.jinja").read_text(encoding="utf-8")
        return template if isinstance(template, str) and template.strip() else None

    @cached_property
    def _special_pattern(self) -> re.Pattern | None:
        tokens = sorted(self.special_tokens, key=len, reverse=True)
        return re.compile("(" + "|".join(re.escape(t) for t in tokens) + ")") if tokens else None

    def _encode_special(self, text: str) -> list[int]:
        """`text` with special-token strings read as those tokens, as `apply_chat_template` tokenizes."""
        if self.sp is None:
            return self.hf.encode(text, add_special_tokens=False)
        if self._special_pattern is None:
            return self.sp.encode(text)
        ids: list[int] = []
        for i, part in enumerate(self._special_pattern.split(text)):
            if i % 2:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.sp.encode(part))
        return ids

    # ---- the reference tokenizer: transformers 4.x `LlamaTokenizer(legacy=True)` ---------------
    @cached_property
    def legacy_special_tokens(self) -> dict[str, int]:
        """Text -> id of the strings the slow `LlamaTokenizer` of transformers 4.x splits text on:
        its special tokens (BOS, EOS, UNK, and PAD where the folder names one, as CLA2's
        special_tokens_map.json names `<pad>`) and the added tokens beyond the SentencePiece
        vocabulary. SentencePiece's own control or user-defined pieces are not among them."""
        out: dict[str, int] = {}
        for name in ("bos", "eos", "unk", "pad"):
            idx = self._hf_id(name) if self._hf_id(name) is not None else self._sp_id(name)
            if idx is None:
                continue
            token = self.hf.special_tokens_map.get(f"{name}_token") if self.hf is not None else None
            out[token if isinstance(token, str) else self.id_to_piece(idx)] = idx
        if self.hf is not None:
            size = self.sp.get_piece_size() if self.sp is not None else 0
            for idx, token in self.hf.added_tokens_decoder.items():
                if idx >= size:
                    out.setdefault(token.content, idx)
        return out

    @cached_property
    def _legacy_pattern(self) -> re.Pattern | None:
        tokens = sorted(self.legacy_special_tokens, key=len, reverse=True)
        return re.compile("(" + "|".join(re.escape(t) for t in tokens) + ")") if tokens else None

    def _encode_legacy(self, text: str) -> list[int]:
        """The slow `LlamaTokenizer` (legacy=True): the text is cut at special-token strings (leftmost,
        longest first), each of those becomes its id, and every other non-empty part is encoded by
        sentencepiece on its own, so each part gets its own dummy-prefix '▁'; the spaces next to a
        special token stay in the neighbouring parts (these tokens do not strip)."""
        if self.sp is None:
            return self.hf.encode(text, add_special_tokens=False)
        pattern = self._legacy_pattern
        if pattern is None or not pattern.search(text):
            return self.sp.encode(text)
        ids: list[int] = []
        for i, part in enumerate(pattern.split(text)):
            if i % 2:
                ids.append(self.legacy_special_tokens[part])
            elif part:
                ids.extend(self.sp.encode(part))
        return ids

    def _decode_legacy(self, ids: list[int], skip_special: bool) -> str:
        """The slow `LlamaTokenizer.decode` (legacy=True, transformers 4.x): special ids dropped when
        `skip_special`; the pieces between added (non-special) tokens are joined by sentencepiece
        after one leading '▁' is cut off the first piece, which sentencepiece's own decode then
        follows by dropping a leading space of its own; those runs and the added tokens are joined
        with ' ' (`spaces_between_special_tokens`). So a piece sequence that starts with a
        whitespace piece ('▁▁▁▁') decodes to one space fewer than `sp.decode` gives."""
        if self.sp is None:
            return self.hf.decode(ids, skip_special_tokens=skip_special)
        size = self.sp.get_piece_size()
        named = {i for i in (self.bos_id, self.eos_id, self.unk_id, self._hf_id("pad"), self._sp_id("pad"))}
        named.discard(None)
        special_ids = set(named)  # all_special_ids: the named ones and the additional special tokens
        if self.hf is not None:
            special_ids |= {i for i, t in self.hf.added_tokens_decoder.items() if t.special and i >= size}
        added = {i for i in self.legacy_special_tokens.values() if i >= size} - named
        special_pieces = {self.id_to_piece(i) for i in special_ids}
        texts: list[str] = []
        run: list[str] = []

        def flush() -> None:
            if run:
                text = self._legacy_pieces_to_string(run, special_pieces)
                if text:
                    texts.append(text)
                run.clear()

        for idx in ids:
            if skip_special and idx in special_ids:
                continue
            if idx in added:
                flush()
                texts.append(self.id_to_piece(idx))
            else:
                run.append(self.id_to_piece(idx))
        if run:
            texts.append(self._legacy_pieces_to_string(run, special_pieces))
        text = " ".join(texts)
        if getattr(self.hf, "clean_up_tokenization_spaces", False):
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't")):
                text = text.replace(a, b)
            for a, b in ((" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(a, b)
        return text

    def _legacy_pieces_to_string(self, pieces: list[str], special_pieces: set[str]) -> str:
        """`LlamaTokenizer.convert_tokens_to_string` (legacy=True) of transformers 4.x."""
        pieces = list(pieces)
        if pieces[0].startswith("▁"):
            pieces[0] = pieces[0][1:]
        out, current, prev_special = "", [], False
        for i, piece in enumerate(pieces):
            if piece in special_pieces:
                if not prev_special and i != 0:
                    out += " "
                out += self.sp.decode_pieces(current) + piece
                prev_special, current = True, []
            else:
                current.append(piece)
                prev_special = False
        return out + self.sp.decode_pieces(current)

    # ---- text ------------------------------------------------------------------------------
    def encode(
        self, text: str, bos: bool = False, eos: bool = False, special: bool = False, legacy: bool = False
    ) -> list[int]:
        """Token ids of `text`; special-token strings in the text are plain text unless `special`
        (every special token, as chat templates are read) or `legacy` (the reference's
        `LlamaTokenizer`, see `_encode_legacy`)."""
        if legacy:
            ids = self._encode_legacy(text)
        elif special:
            ids = self._encode_special(text)
        elif self.sp is not None:
            ids = self.sp.encode(text)
        else:
            ids = self.hf.encode(text, add_special_tokens=False, split_special_tokens=True)
        if bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        if eos and self.eos_id is not None:
            ids = [*ids, self.eos_id]
        return ids

    def encode_batch(
        self, texts: list[str], bos: bool = False, eos: bool = False, legacy: bool = False
    ) -> list[list[int]]:
        if self.sp is not None and not bos and not eos:
            if not legacy or self._legacy_pattern is None:
                return self.sp.encode(texts)
            out = self.sp.encode(texts)  # texts without a special-token string encode as usual
            for i, text in enumerate(texts):
                if self._legacy_pattern.search(text):
                    out[i] = self._encode_legacy(text)
            return out
        return [self.encode(t, bos=bos, eos=eos, legacy=legacy) for t in texts]

    def decode(self, ids: list[int], skip_special: bool = True, legacy: bool = False) -> str:
        """Text of `ids`; `legacy`: as the reference's `LlamaTokenizer.decode` (see `_decode_legacy`)."""
        if legacy:
            return self._decode_legacy(list(ids), skip_special)
        specials = {i for i in (self.bos_id, self.eos_id, self.pad_id, self.unk_id) if i is not None}
        if self.sp is not None:
            size = self.sp.get_piece_size()
            kept = [i for i in ids if i < size and not (skip_special and i in specials and self.sp.is_control(i))]
            return self.sp.decode(kept)
        return self.hf.decode(ids, skip_special_tokens=skip_special)

    def id_to_piece(self, idx: int) -> str:
        if self.sp is not None and idx < self.sp.get_piece_size():
            return self.sp.id_to_piece(idx)
        return self.hf.convert_ids_to_tokens(idx)

    def piece_to_id(self, piece: str) -> int | None:
        """The id of an exact vocabulary piece, or None when the vocabulary lacks it."""
        if self.sp is not None:
            idx = self.sp.piece_to_id(piece)
            return None if idx == self.sp.unk_id() and piece != self.sp.id_to_piece(idx) else idx
        vocab = self.hf.get_vocab()
        return vocab.get(piece)

    def is_byte(self, idx: int) -> bool:
        if self.sp is not None:
            return idx < self.sp.get_piece_size() and self.sp.is_byte(idx)
        return False

    # ---- files -----------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> None:
        """Copy the tokenizer files into `out_dir` byte for byte.

        A bare `.model` file becomes a complete HF tokenizer folder (see `spm.write_tokenizer_dir`).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            from zhllama.core.spm import load_proto, write_tokenizer_dir

            write_tokenizer_dir(load_proto(self.path), out, model_file=self.path)
            return
        copied = False
        for name in TOKENIZER_FILES:
            if (self.path / name).is_file():
                shutil.copyfile(self.path / name, out / name)
                copied = True
        if not copied and self.hf is not None:
            self.hf.save_pretrained(str(out))


def load_tokenizer(path: str | Path) -> ZhTokenizer:
    return ZhTokenizer(path)


def reference_encode(tokenizer, text: str, bos: bool = False) -> list[int]:
    """`text` as the reference scripts' `LlamaTokenizer` reads it (`ZhTokenizer.encode(legacy=True)`);
    a tokenizer without that switch (llama.cpp's, for .gguf models) parses special tokens its own way."""
    if isinstance(tokenizer, ZhTokenizer):
        return tokenizer.encode(text, bos=bos, legacy=True)
    return tokenizer.encode(text, bos=bos, special=True)


def reference_decode(tokenizer, ids, skip_special: bool = True) -> str:
    """`ids` decoded as the reference's `LlamaTokenizer.decode` (`ZhTokenizer.decode(legacy=True)`)."""
    if isinstance(tokenizer, ZhTokenizer):
        return tokenizer.decode(list(ids), skip_special=skip_special, legacy=True)
    return tokenizer.decode(list(ids), skip_special=skip_special)
