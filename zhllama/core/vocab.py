"""`zhllama vocab`: train a SentencePiece model, merge it into a LLaMA tokenizer, measure lengths.

Byte-level BPE (tokenizer.json) vocabularies are in `bpe.py`; `merge_any` dispatches on the base.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zhllama.core import bpe, spm
from zhllama.core.atomic import atomic_dir, atomic_path, check_output_dir, check_output_file
from zhllama.core.errors import UserError
from zhllama.core.paths import check_output, iter_text_lines, read_text_file

PROBE_TEXT = (
    "人工智能是计算机科学的一个分支，它企图了解智能的实质。\n"
    "我爱北京天安门，hello world 123\n"
    "  前后有空格  的句子 \n"
    "Mixed 中英文 text（Victorian era）与数字 2023 年 3.14159。\n"
    "长江、黄河和珠江是中国的三大河流；LLaMA 模型使用 SentencePiece 分词。"
)


@dataclass
class TrainResult:
    output: str
    pieces: int
    seconds: float


def _count_lines(files: Sequence[Path]) -> int:
    """Non-blank lines over all files; checks that each is a readable UTF-8 text file."""
    return sum(1 for f in files for line in iter_text_lines(f) if line.strip())


def train(
    inputs: Sequence[str | Path],
    vocab_size: int,
    output: str | Path,
    model_type: str = "bpe",
    character_coverage: float = 0.9995,
    byte_fallback: bool = False,
    split_digits: bool = True,
    max_sentence_length: int = 16384,
    threads: int = 2,
    force: bool = True,
) -> TrainResult:
    """Train a SentencePiece model on text files (one sentence or paragraph per line)."""
    import sentencepiece as sp

    files = [Path(f) for f in inputs]
    if not files:
        raise UserError("--input: give at least one text file")
    if model_type not in ("bpe", "unigram"):
        raise UserError(f"--model-type: '{model_type}' is not one of bpe, unigram")
    if vocab_size < 8:
        raise UserError(f"--vocab-size: {vocab_size} is too small")
    if not 0.0 < character_coverage <= 1.0:
        raise UserError(f"--character-coverage: {character_coverage} is not in (0, 1]")
    if max_sentence_length < 1:
        raise UserError(f"max_sentence_length: {max_sentence_length} must be positive")
    check_output(output, files)
    check_output_file(Path(output), force)
    if _count_lines(files) == 0:
        raise UserError(f"{', '.join(map(str, files))}: corpus is empty")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "sp"
        try:
            sp.SentencePieceTrainer.train(
                input=[str(f) for f in files],
                model_prefix=str(prefix),
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                byte_fallback=byte_fallback,
                split_digits=split_digits,
                max_sentence_length=max_sentence_length,
                num_threads=threads,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=True,
                unk_id=0,
                bos_id=1,
                eos_id=2,
                pad_id=-1,
                input_sentence_size=0,
                shuffle_input_sentence=False,
                hard_vocab_limit=True,
                minloglevel=2,
            )
        except RuntimeError as exc:
            message = str(exc).strip().splitlines()[-1]
            match = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", message)
            if match:
                raise UserError(
                    f"--vocab-size: {match.group(1)} is larger than the corpus supports (at most {match.group(2)})"
                ) from exc
            if "character_coverage() >= 0.98" in message:
                raise UserError(
                    f"--character-coverage: {character_coverage} is below 0.98, which sentencepiece refuses"
                ) from exc
            match = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
            if match:
                raise UserError(
                    f"--vocab-size: {match.group(1)} is smaller than the {match.group(2)} characters the corpus needs "
                    "(raise --vocab-size or lower --character-coverage)"
                ) from exc
            raise UserError(f"sentencepiece training failed: {message}") from exc
        with atomic_path(output, force=force) as out_tmp:  # only once training succeeded
            shutil.copyfile(f"{prefix}.model", out_tmp)
    pieces = len(spm.load_proto(output).pieces)
    return TrainResult(str(output), pieces, time.perf_counter() - start)


@dataclass
class MergeReport:
    base: str
    added_models: list[str]
    base_size: int
    added: int
    skipped_duplicates: int
    skipped_special: int
    final_size: int
    pad_token: str | None
    pad_id: int | None
    reference_scores: bool
    score_ties: bool
    hf_matches_sentencepiece: bool
    per_model: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def merge_protos(
    base: spm.ModelProto,
    additions: Sequence[spm.ModelProto],
    pad_token: str | None = None,
    reference_scores: bool = False,
) -> tuple[spm.ModelProto, dict]:
    """Append every new piece of `additions` (in order) to a copy of `base` as a NORMAL piece.

    Base pieces, ids, scores, normalizer and trainer spec stay untouched. New pieces get score 0
    with `reference_scores` (the reference script's choice); otherwise distinct scores above every
    base score that keep their order, so that the merged BPE has no ties.
    """
    merged = spm.ModelProto()
    merged.CopyFrom(base)
    present = spm.piece_ids(merged)
    stats = {"added": 0, "skipped_duplicates": 0, "skipped_special": 0, "per_model": []}
    if pad_token is not None:
        if pad_token in present:
            merged.trainer_spec.pad_id = present[pad_token]
        else:
            piece = merged.pieces.add(piece=pad_token, score=0.0, type=spm.CONTROL)
            merged.trainer_spec.pad_id = len(merged.pieces) - 1
            present[piece.piece] = merged.trainer_spec.pad_id
    new_pieces: list[str] = []
    for model in additions:
        added = dupes = special = 0
        for p in model.pieces:
            if p.piece in present:
                dupes += 1
            elif p.type not in (spm.NORMAL, spm.USER_DEFINED):
                special += 1
            else:
                present[p.piece] = -1
                new_pieces.append(p.piece)
                added += 1
        stats["per_model"].append({"added": added, "skipped_duplicates": dupes, "skipped_special": special})
        stats["added"] += added
        stats["skipped_duplicates"] += dupes
        stats["skipped_special"] += special
    top = max((p.score for p in merged.pieces), default=0.0)
    count = len(new_pieces)
    for i, piece in enumerate(new_pieces):
        score = 0.0 if reference_scores else float(top + (count - i))
        merged.pieces.add(piece=piece, score=score, type=spm.NORMAL)
    return merged, stats


def hf_agrees(tokenizer_dir: Path, text: str = PROBE_TEXT) -> bool:
    """Whether `AutoTokenizer.from_pretrained(dir)` and sentencepiece give the same ids on `text`."""
    import sentencepiece as sp
    from transformers import AutoTokenizer

    proc = sp.SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))
    hf = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    for line in text.splitlines():
        if hf.encode(line, add_special_tokens=False) != proc.encode(line):
            return False
    return True


def merge(
    base: str | Path,
    additions: Sequence[str | Path],
    output: str | Path,
    pad_token: str | None = None,
    reference_scores: bool = False,
    force: bool = False,
) -> MergeReport:
    """Merge SentencePiece models into a base LLaMA tokenizer and write a tokenizer folder.

    A byte-level BPE base (tokenizer.json) goes to `bpe.merge` (see `merge_any`).
    """
    if not additions:
        raise UserError("--add: give at least one SentencePiece model to merge")
    for a in additions:
        if bpe.addition_kind(Path(a)) != "sentencepiece":
            raise UserError(
                f"{a}: cannot be merged into the SentencePiece base {base}: a SentencePiece vocabulary only takes "
                "SentencePiece pieces (train the addition with `vocab train --kind sentencepiece`)"
            )
    if pad_token is not None and not pad_token:
        raise UserError("--pad-token: must not be empty")
    check_output(output, [base, *additions])
    check_output_dir(Path(output), force)
    base_file = spm.resolve_model_file(base)
    base_proto = spm.load_proto(base_file)
    if base_proto.trainer_spec.model_type != spm.BPE:
        raise UserError(f"{base_file}: base tokenizer must be a SentencePiece BPE model (LLaMA's kind)")
    if pad_token is not None:
        specials = {spm.special_id(base_proto, name): name for name in ("unk", "bos", "eos")}
        taken = specials.get(spm.piece_ids(base_proto).get(pad_token, -1))
        if taken is not None:
            raise UserError(f"--pad-token: '{pad_token}' is already the {taken} token of {base_file}")
    add_protos = [spm.load_proto(a) for a in additions]
    merged, stats = merge_protos(base_proto, add_protos, pad_token=pad_token, reference_scores=reference_scores)
    ties = spm.has_score_ties(merged)
    with atomic_dir(output, force=force) as tmp:
        spm.write_tokenizer_dir(merged, tmp, pad_token=pad_token)
        agrees = hf_agrees(tmp)
        report = MergeReport(
            base=str(base_file),
            added_models=[str(spm.resolve_model_file(a)) for a in additions],
            base_size=len(base_proto.pieces),
            added=stats["added"],
            skipped_duplicates=stats["skipped_duplicates"],
            skipped_special=stats["skipped_special"],
            final_size=len(merged.pieces),
            pad_token=pad_token,
            pad_id=spm.special_id(merged, "pad"),
            reference_scores=reference_scores,
            score_ties=ties,
            hf_matches_sentencepiece=agrees and not ties,
            per_model=stats["per_model"],
        )
        (tmp / "merge_report.json").write_text(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n")
    return report


def base_kind(base: str | Path) -> str:
    """'sentencepiece' (tokenizer.model / .model) or 'byte-bpe' (tokenizer.json) for a --base."""
    p = Path(base)
    if p.is_dir():
        if (p / "tokenizer.model").is_file():
            return "sentencepiece"
        if (p / "tokenizer.json").is_file():
            return "byte-bpe"
        raise UserError(f"{p}: no tokenizer.model or tokenizer.json in this folder")
    if not p.is_file():
        raise UserError(f"{p}: no such file or folder")
    return "byte-bpe" if bpe.addition_kind(p) == "byte-bpe" else "sentencepiece"


def merge_any(
    base: str | Path,
    additions: Sequence[str | Path],
    output: str | Path,
    pad_token: str | None = None,
    reference_scores: bool = False,
    pad_to_multiple_of: int | None = None,
    force: bool = False,
):
    """`vocab merge`: SentencePiece bases take SentencePiece models; byte-level BPE bases take
    tokenizer.json files, SentencePiece models and word lists."""
    if base_kind(base) == "sentencepiece":
        if pad_to_multiple_of is not None:
            raise UserError("--pad-to-multiple-of: only for byte-level BPE bases (tokenizer.json)")
        return merge(base, additions, output, pad_token=pad_token, reference_scores=reference_scores, force=force)
    if pad_token is not None:
        raise UserError("--pad-token: only for SentencePiece bases (a byte-level base keeps its own special tokens)")
    if reference_scores:
        raise UserError("--reference-scores: only for SentencePiece bases")
    return bpe.merge(base, additions, output, pad_to_multiple_of=pad_to_multiple_of, force=force)


@dataclass
class LengthStats:
    tokenizer: str
    vocab_size: int
    characters: int
    tokens: int
    tokens_per_char: float
    relative_length: float
    byte_fallback_rate: float  # byte-level BPE: share of tokens that are pieces of a character
    score_ties: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def stats(tokenizers: Sequence[str | Path], text_file: str | Path) -> list[LengthStats]:
    """Token counts of each tokenizer on a text file; relative length is against the first one."""
    from zhllama.core.tokenizer import ZhTokenizer

    if not tokenizers:
        raise UserError("--tokenizer: give at least one tokenizer")
    text_path = Path(text_file)
    lines = [line for line in read_text_file(text_path).splitlines() if line.strip()]
    if not lines:
        raise UserError(f"{text_path}: text file is empty")
    characters = sum(len(line) for line in lines)
    results: list[LengthStats] = []
    for name in tokenizers:
        path = Path(name)
        byte_level = bpe.is_byte_level_folder(path) or (path.is_file() and bpe.addition_kind(path) == "byte-bpe")
        tok = bpe.JsonTokenizer(path) if path.is_file() and byte_level else ZhTokenizer(name)
        encoded = tok.encode_batch(lines)
        tokens = sum(len(ids) for ids in encoded)
        if byte_level:  # byte-level BPE has no byte fallback: count tokens that are pieces of a character
            pieces = {i: bpe.partial_character(tok.id_to_piece(i)) for i in {i for ids in encoded for i in ids}}
            byte_tokens = sum(1 for ids in encoded for i in ids if pieces[i])
        else:
            byte_tokens = sum(1 for ids in encoded for i in ids if tok.is_byte(i))
        ties = (
            not byte_level and tok.sp is not None and spm.has_score_ties(spm.load_proto(spm.resolve_model_file(name)))
        )
        results.append(
            LengthStats(
                tokenizer=str(name),
                vocab_size=len(tok),
                characters=characters,
                tokens=tokens,
                tokens_per_char=tokens / characters,
                relative_length=tokens / results[0].tokens if results else 1.0,
                byte_fallback_rate=byte_tokens / tokens if tokens else 0.0,
                score_ties=ties,
            )
        )
    return results
