"""SentencePiece models as HF tokenizer folders that encode exactly like sentencepiece.

transformers 5 converts a `tokenizer.model` into a rank-ordered BPE itself, and that conversion
disagrees with sentencepiece on extended (merged) vocabularies. SentencePiece BPE repeatedly
merges the adjacent pair whose concatenation has the highest score. The same behaviour in a
rank-based BPE (`tokenizer.json`) is a merges list holding every pair (a, b) where a, b and a+b
are all normal pieces, ordered by the score of a+b (ties by the id of a+b). That is exact when no
two reachable pieces share a score; with ties sentencepiece breaks them by position in the text,
which ranks cannot express, so `has_score_ties` lets callers warn and fall back to sentencepiece.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2 as spm_pb2
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

from zhllama.core.errors import UserError

ModelProto = spm_pb2.ModelProto
Piece = spm_pb2.ModelProto.SentencePiece

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = (
    Piece.NORMAL,
    Piece.UNKNOWN,
    Piece.CONTROL,
    Piece.USER_DEFINED,
    Piece.UNUSED,
    Piece.BYTE,
)
BPE = spm_pb2.TrainerSpec.BPE
UNIGRAM = spm_pb2.TrainerSpec.UNIGRAM
SPIECE_UNDERLINE = "▁"


def resolve_model_file(path: str | Path) -> Path:
    """A `.model` file, or the `tokenizer.model` inside a tokenizer folder."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "tokenizer.model"
        if not candidate.is_file():
            raise UserError(f"{path}: folder holds no tokenizer.model (a SentencePiece model is needed)")
        return candidate
    if not path.exists():
        raise UserError(f"{path}: no such file")
    return path


def load_proto(path: str | Path) -> ModelProto:
    """Parse a SentencePiece model; a file that is not one is a user error naming it."""
    file = resolve_model_file(path)
    proto = ModelProto()
    try:
        proto.ParseFromString(file.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError or RuntimeError depending on the backend
        raise UserError(f"{file}: not a SentencePiece model ({type(exc).__name__})") from exc
    if len(proto.pieces) == 0:
        raise UserError(f"{file}: not a SentencePiece model (no pieces)")
    return proto


def piece_ids(proto: ModelProto) -> dict[str, int]:
    return {p.piece: i for i, p in enumerate(proto.pieces)}


def special_id(proto: ModelProto, field: str) -> int | None:
    """The id of unk/bos/eos/pad from the trainer spec (-1 means none)."""
    value = getattr(proto.trainer_spec, f"{field}_id")
    return value if 0 <= value < len(proto.pieces) else None


def _merge_candidates(proto: ModelProto) -> list[tuple[float, int, str, str]]:
    pieces = proto.pieces
    normal = {p.piece: i for i, p in enumerate(pieces) if p.type == NORMAL}
    candidates = []
    for merged, merged_id in normal.items():
        score = pieces[merged_id].score
        for cut in range(1, len(merged)):
            left, right = merged[:cut], merged[cut:]
            if left in normal and right in normal:
                candidates.append((score, merged_id, left, right))
    return candidates


def has_score_ties(proto: ModelProto) -> bool:
    """True when two different BPE merge results share a score, so ranks cannot reproduce sentencepiece.

    Runs of '▁' are left out: LLaMA gives all of them the same sentinel score, and on every run
    length we measured (0-11 spaces between, before and after words) the rank order by id still
    reproduces sentencepiece.
    """
    if proto.trainer_spec.model_type != BPE:
        return False
    owner: dict[float, int] = {}
    for score, merged_id, _, _ in _merge_candidates(proto):
        if not proto.pieces[merged_id].piece.strip(SPIECE_UNDERLINE):
            continue
        if owner.setdefault(score, merged_id) != merged_id:
            return True
    return False


def build_hf_tokenizer(proto: ModelProto, add_bos: bool = True, add_eos: bool = False) -> Tokenizer:
    """A `tokenizers.Tokenizer` that encodes like sentencepiece for a BPE model without score ties."""
    if proto.trainer_spec.model_type != BPE:
        raise UserError("only SentencePiece BPE models (the LLaMA family's) can be written as tokenizer.json")
    if proto.normalizer_spec.name not in ("identity", "") or proto.normalizer_spec.remove_extra_whitespaces:
        raise UserError(
            f"SentencePiece normalizer '{proto.normalizer_spec.name}' (remove_extra_whitespaces="
            f"{proto.normalizer_spec.remove_extra_whitespaces}) cannot be represented; LLaMA tokenizers use 'identity'"
        )
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    candidates = sorted(_merge_candidates(proto), key=lambda c: (-c[0], c[1]))
    merges = [(left, right) for _, _, left, right in candidates]
    unk_id = special_id(proto, "unk")
    unk = proto.pieces[unk_id].piece if unk_id is not None else None
    model = models.BPE(
        vocab=vocab,
        merges=merges,
        unk_token=unk,
        fuse_unk=True,
        byte_fallback=proto.trainer_spec.byte_fallback,
        ignore_merges=False,
    )
    tok = Tokenizer(model)
    steps = []
    if proto.normalizer_spec.add_dummy_prefix:
        steps.append(normalizers.Prepend(SPIECE_UNDERLINE))
    steps.append(normalizers.Replace(" ", SPIECE_UNDERLINE))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = None
    dec = [decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if proto.normalizer_spec.add_dummy_prefix:
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)
    added = []
    for p in proto.pieces:
        if p.type in (UNKNOWN, CONTROL):
            added.append(AddedToken(p.piece, special=True, normalized=False))
        elif p.type == USER_DEFINED:
            added.append(AddedToken(p.piece, special=False, normalized=False))
    tok.add_tokens(added)
    bos_id, eos_id = special_id(proto, "bos"), special_id(proto, "eos")
    single, specials = "$A", []
    if add_bos and bos_id is not None:
        single = f"{proto.pieces[bos_id].piece}:0 {single}"
        specials.append((proto.pieces[bos_id].piece, bos_id))
    if add_eos and eos_id is not None:
        single = f"{single} {proto.pieces[eos_id].piece}:0"
        specials.append((proto.pieces[eos_id].piece, eos_id))
    pair = single + " " + single.replace("$A", "$B").replace(":0", ":1")
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    return tok


def _token_entry(content: str) -> dict:
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def write_tokenizer_dir(
    proto: ModelProto,
    out_dir: str | Path,
    pad_token: str | None = None,
    model_file: str | Path | None = None,
) -> Path:
    """Write `tokenizer.model`, `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`.

    `model_file`, when given, is copied byte for byte instead of re-serialising `proto`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model_file is not None:
        shutil.copyfile(model_file, out / "tokenizer.model")
    else:
        (out / "tokenizer.model").write_bytes(proto.SerializeToString())
    hf = build_hf_tokenizer(proto)
    hf.save(str(out / "tokenizer.json"))
    names = {}
    for field in ("unk", "bos", "eos", "pad"):
        idx = special_id(proto, field)
        if idx is not None:
            names[field] = proto.pieces[idx].piece
    if pad_token is not None:
        names["pad"] = pad_token
    special_map = {f"{k}_token": v for k, v in names.items()}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 1_000_000_000_000_000_019_884_624_838_656,
        "sp_model_kwargs": {},
        "padding_side": "right",
        **{k: _token_entry(v) for k, v in special_map.items()},
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, ensure_ascii=False, indent=2) + "\n")
    return out
