"""The GGUF vocabulary and tokenizer metadata, written as llama.cpp's `convert_hf_to_gguf.py` writes it.

Two tokenizer kinds, as in the converter's `LlamaModel.set_vocab`:

- SentencePiece (`tokenizer.model`): llama.cpp's 'llama' tokenizer. Every piece with its score and
  type; ids the model has beyond the SentencePiece model are `[PAD<id>]` UNUSED (score -10000)
  unless `added_tokens.json` names them (USER_DEFINED, score -1000: Chinese-Alpaca's `[PAD]`);
  `tokenizer_config.json`'s `added_tokens_decoder` entries become CONTROL (special, or looking
  special like `<|...|>`) or USER_DEFINED.
- byte-level BPE (`tokenizer.json` only, e.g. SmolLM2): llama.cpp's 'gpt2' tokenizer, the vocab as
  transformers' tokenizer reports it, merges, and the pre-tokenizer type found by llama.cpp's own
  hash of the tokenization of a check text (`llama_cpp_pre`); for a vocabulary extended by
  `zhllama vocab merge`, the base's name recorded in tokenizer_config.json (`merged_base_pre`).

Special ids, add-BOS/EOS flags, merges and the chat template come from gguf-py's `SpecialVocab`
(the converter's own reader), with the one rule of the newer llama.cpp it lacks: a byte-level
post-processor means no BOS/EOS is added unless the tokenizer config says so.
"""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.paths import read_json

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def looks_special(token: str) -> bool:
    """llama.cpp's `does_token_look_special`."""
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def sentencepiece_vocab(model_dir: Path, vocab_size: int) -> tuple[list[bytes], list[float], list[int]]:
    from zhllama.core import spm

    proto = spm.load_proto(model_dir / "tokenizer.model")
    if proto.trainer_spec.model_type != spm.BPE:
        raise UserError(
            f"{model_dir / 'tokenizer.model'}: not a BPE SentencePiece model; llama.cpp's 'llama' "
            "tokenizer cannot represent it"
        )
    if len(proto.pieces) > vocab_size:
        raise UserError(f"{model_dir}: tokenizer has {len(proto.pieces)} pieces but the model only {vocab_size} rows")
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores = [-10000.0] * vocab_size
    types = [UNUSED] * vocab_size
    kinds = {1: NORMAL, 2: UNKNOWN, 3: CONTROL, 4: NORMAL, 5: UNUSED, 6: BYTE}  # sentencepiece piece types
    for i, piece in enumerate(proto.pieces):
        tokens[i] = piece.piece.encode("utf-8")
        scores[i] = float(piece.score)
        types[i] = kinds.get(int(piece.type), NORMAL)
    added = model_dir / "added_tokens.json"
    for text, idx in read_json(added, optional=True).items():
        if not isinstance(idx, int) or idx < 0:
            raise UserError(f"{added}: id of '{text}' is not a non-negative integer")
        if idx < vocab_size:
            tokens[idx], scores[idx], types[idx] = text.encode("utf-8"), -1000.0, USER_DEFINED
    decoder = read_json(model_dir / "tokenizer_config.json", optional=True).get("added_tokens_decoder", {})
    for key, data in decoder.items():
        idx, text = int(key), data["content"]
        if idx >= vocab_size:
            continue
        if data.get("special") or looks_special(text):
            types[idx] = CONTROL
        else:
            text = text.replace("▁", " ")
            types[idx] = USER_DEFINED
        scores[idx], tokens[idx] = -1000.0, text.encode("utf-8")
    return tokens, scores, types


def pre_tokenizer(model_dir: Path, tokenizer) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for a BPE tokenizer (its hash table), or a clear error."""
    from zhllama.core.quantize.llama_cpp_pre import CHECK_TEXT, PRE_TOKENIZERS

    digest = sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()
    if digest in PRE_TOKENIZERS:
        return PRE_TOKENIZERS[digest]
    recorded = merged_base_pre(model_dir)
    if recorded is not None:
        return recorded
    raise UserError(
        f"{model_dir / 'tokenizer.json'}: llama.cpp does not know this BPE pre-tokenizer (check hash "
        f"{digest[:16]}...); its converter refuses it too, and a wrong guess would split text differently"
    )


def merged_base_pre(model_dir: Path) -> str | None:
    """The base's pre-tokenizer name that `zhllama vocab merge` recorded for an extended byte-level BPE.

    New tokens change the ids of llama.cpp's check text (it has Chinese), so the hash no longer
    names the pre-tokenizer; the regex is still the base's, whose name the merge looked up.
    """
    from zhllama.core.bpe import RECORD_KEY
    from zhllama.core.quantize.llama_cpp_pre import PRE_TOKENIZERS

    record = read_json(model_dir / "tokenizer_config.json", optional=True).get(RECORD_KEY)
    name = record.get("llama_cpp_pre") if isinstance(record, dict) else None
    if name is None:
        return None
    if name not in set(PRE_TOKENIZERS.values()):
        raise UserError(
            f"{model_dir / 'tokenizer_config.json'}: {RECORD_KEY}.llama_cpp_pre '{name}' is not a llama.cpp pre-tokenizer"
        )
    return name


def byte_level_vocab(model_dir: Path, vocab_size: int) -> tuple[list[str], list[int], str]:
    """llama.cpp's `get_vocab_base`: tokens, types and pre-tokenizer of a tokenizer.json folder."""
    from transformers import AutoTokenizer

    data = read_json(model_dir / "tokenizer.json", optional=True)
    if data.get("model", {}).get("type") != "BPE":
        raise UserError(
            f"{model_dir / 'tokenizer.json'}: only byte-level BPE or SentencePiece vocabularies can be written to GGUF"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(
            f"{model_dir / 'tokenizer.json'}: cannot be loaded ({str(exc).splitlines()[0][:160]})"
        ) from None
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise UserError(
            f"{model_dir}: tokenizer has ids up to {max(vocab.values())} but the model only {vocab_size} rows"
        )
    pre = pre_tokenizer(model_dir, tokenizer)
    by_id = {i: t for t, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        token = by_id[i]
        if token in added:
            if not decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            if decoder[i].special or looks_special(token):
                types.append(CONTROL)
            else:
                token = token.replace("▁", " ")
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(token)
    return tokens, types, pre


def special_vocab(model_dir: Path, n_vocab: int | None, load_merges: bool):
    """gguf-py's SpecialVocab, with newer llama.cpp's byte-level post-processor rule."""
    import logging

    import gguf

    log = logging.getLogger("gguf")
    level = log.level
    log.setLevel(logging.ERROR)  # its notes on template parsing are not the user's problem
    try:
        special = gguf.SpecialVocab(model_dir, load_merges=load_merges, n_vocab=n_vocab)
    finally:
        log.setLevel(level)
    post = read_json(model_dir / "tokenizer.json", optional=True).get("post_processor") or {}
    processors = post.get("processors", [post]) if post else []
    if any(p.get("type") == "ByteLevel" for p in processors):
        config = read_json(model_dir / "tokenizer_config.json", optional=True)
        for typ in ("bos", "eos"):
            if not isinstance(config.get(f"add_{typ}_token"), bool):
                special.add_special_token.setdefault(typ, False)
    return special


def write_vocab(writer, model_dir: Path, vocab_size: int) -> str:
    """Add the vocabulary keys to `writer`; returns the tokenizer kind ('llama' or 'gpt2')."""
    config = read_json(model_dir / "tokenizer_config.json", optional=True)
    if (model_dir / "tokenizer.model").is_file():
        if isinstance(config.get("add_prefix_space"), bool):
            writer.add_add_space_prefix(config["add_prefix_space"])
        tokens, scores, types = sentencepiece_vocab(model_dir, vocab_size)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        special_vocab(model_dir, len(tokens), load_merges=False).add_to_gguf(writer, quiet=True)
        kind = "llama"
    elif (model_dir / "tokenizer.json").is_file():
        tokens, types, pre = byte_level_vocab(model_dir, vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        special_vocab(model_dir, None, load_merges=True).add_to_gguf(writer, quiet=True)
        kind = "gpt2"
    else:
        raise UserError(f"{model_dir}: no tokenizer.model or tokenizer.json to write the GGUF vocabulary from")
    if vocab_size == 49152:  # the converter's rule for granite-sized vocabularies (SmolLM2 too)
        writer.add_add_bos_token(False)
    return kind


def check_tokenizer_files(model_dir: Path) -> None:
    """Parse the tokenizer files a GGUF will be built from, before anything is written."""
    for name in ("tokenizer_config.json", "added_tokens.json", "tokenizer.json", "special_tokens_map.json"):
        read_json(model_dir / name, optional=True)
    if not any((model_dir / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
        raise UserError(f"{model_dir}: no tokenizer.model or tokenizer.json to write the GGUF vocabulary from")
