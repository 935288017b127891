"""Byte-level BPE vocabularies (Llama-3.x, Qwen2.5/3, SmolLM2): train one, merge it into a base.

A byte-level BPE tokenizer (a `tokenizer.json` with a BPE model and a ByteLevel pre-tokenizer)
splits text with its pre-tokenizer regex into pre-tokens, maps each byte to one character of the
GPT-2 byte alphabet, and merges adjacent symbols by rank. `merge` extends such a base so that:

- every base token keeps its id and every base merge its rank; the new tokens get ids after the
  base's whole vocabulary, added/special tokens included (`<|im_end|>`, `<|eot_id|>` keep their
  ids and behaviour), and their merges are appended after the base's merges. `tokenizers` numbers
  an added token that the model vocabulary lacks from the model's size when it loads a file, so
  the base's added tokens past its model vocabulary (Llama-3's 128000..128255) are also written
  into the merged model vocabulary at their own ids; they stay added tokens, matched before
  pre-tokenization, and no merge produces them;
- only tokens containing a non-ASCII byte are added. A merge's result holds the bytes of both its
  parts, so an added merge can only fire inside a pre-token that has a non-ASCII byte: ASCII text
  (English, code, digits) encodes to exactly the base's ids, by construction;
- each new token is made reachable: its merge joins the two tokens the merged tokenizer splits it
  into at that point (bytes of the base's pre-tokens, earlier new tokens); when it splits into more
  than two, intermediate tokens (each holding a non-ASCII byte) are added first. Tokens that cannot
  occur (crossing a pre-token boundary of the base) are skipped and counted;
- the normalizer, pre-tokenizer, post-processor (BOS handling), decoder, added tokens and chat
  template are the base's, byte for byte.

Because base merges all rank before new ones and new merges only involve new tokens, the merged
tokenization of any pre-token is the base's tokenization with new merges applied on top of it.

The llama.cpp pre-tokenizer name of the base (found by llama.cpp's own check-text hash) is
recorded in the merged `tokenizer_config.json` (`zhllama.llama_cpp_pre`): the merged tokenizer
splits text with the same regex, but its ids for the check text differ, so the hash no longer
identifies it (`core/quantize/gguf_vocab.py` reads the record).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.paths import check_output, iter_text_lines, read_json

RECORD_KEY = "zhllama"  # tokenizer_config.json key of the merge record
PAD_TOKEN = "<|zh_reserved_{}|>"
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "generation_config.json")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character table (the ByteLevel alphabet of `tokenizers`)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


BYTE_TO_CHAR = _bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def token_bytes(token: str) -> bytes | None:
    """The bytes a byte-level token stands for (None when it has a character outside the alphabet)."""
    try:
        return bytes(CHAR_TO_BYTE[c] for c in token)
    except KeyError:
        return None


def to_byte_level(data: bytes) -> str:
    return "".join(BYTE_TO_CHAR[b] for b in data)


def is_ascii_token(token: str) -> bool:
    data = token_bytes(token)
    return data is not None and all(b < 0x80 for b in data)


# ---- reading tokenizer.json files ---------------------------------------------------------------
def _mentions(component, kind: str) -> bool:
    """Whether a pre-tokenizer/decoder JSON (possibly a Sequence) contains a component of `kind`."""
    if isinstance(component, dict):
        if component.get("type") == kind:
            return True
        return any(_mentions(c, kind) for key in ("pretokenizers", "decoders") for c in component.get(key) or [])
    return False


def tokenizer_json_file(path: str | Path) -> Path:
    """The tokenizer.json of a folder, or the file itself."""
    p = Path(path)
    if p.is_dir():
        if not (p / "tokenizer.json").is_file():
            raise UserError(f"{p}: no tokenizer.json in this folder")
        return p / "tokenizer.json"
    if not p.exists():
        raise UserError(f"{p}: no such file or folder")
    return p


@dataclass
class ByteBpe:
    """A byte-level BPE `tokenizer.json`, parsed and checked."""

    path: Path
    data: dict

    @classmethod
    def load(cls, path: str | Path, role: str = "tokenizer") -> ByteBpe:
        file = tokenizer_json_file(path)
        data = read_json(file)
        model = data.get("model")
        if not isinstance(model, dict):
            raise UserError(f"{file}: no 'model' object; not a tokenizer.json")
        kind = model.get("type") or ("BPE" if "merges" in model else None)
        if kind != "BPE":
            raise UserError(
                f"{file}: a {kind or 'unknown'} tokenizer; a {role} must be a byte-level BPE tokenizer.json "
                "(Llama-3, Qwen, SmolLM2, GPT-2 style)"
            )
        if not (_mentions(data.get("pre_tokenizer"), "ByteLevel") and _mentions(data.get("decoder"), "ByteLevel")):
            raise UserError(
                f"{file}: a BPE tokenizer without a ByteLevel pre-tokenizer and decoder (SentencePiece-style BPE); "
                f"a {role} must be byte-level"
            )
        for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key):
                raise UserError(f"{file}: model.{key} is set; only plain byte-level BPE is supported")
        if not isinstance(model.get("vocab"), dict) or not isinstance(model.get("merges"), list):
            raise UserError(f"{file}: model.vocab or model.merges is missing")
        return cls(file, data)

    @property
    def folder(self) -> Path | None:
        return self.path.parent if self.path.name == "tokenizer.json" else None

    @property
    def vocab(self) -> dict[str, int]:
        return self.data["model"]["vocab"]

    @cached_property
    def merges(self) -> list[tuple[str, str]]:
        out = []
        for m in self.data["model"]["merges"]:
            pair = tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
            if len(pair) != 2:
                raise UserError(f"{self.path}: merge {m!r} is not a pair of tokens")
            out.append(pair)
        return out

    @property
    def added_tokens(self) -> list[dict]:
        return list(self.data.get("added_tokens") or [])

    @property
    def ignore_merges(self) -> bool:
        return bool(self.data["model"].get("ignore_merges"))

    @property
    def size(self) -> int:
        """One past the highest id (model vocabulary and added tokens together)."""
        ids = list(self.vocab.values()) + [t["id"] for t in self.added_tokens]
        return max(ids) + 1 if ids else 0

    @cached_property
    def backend(self):
        """The `tokenizers.Tokenizer` of this file (the library's own reading of it)."""
        from tokenizers import Tokenizer

        try:
            return Tokenizer.from_str(json.dumps(self.data))
        except Exception as exc:
            raise UserError(f"{self.path}: tokenizers cannot load it ({str(exc).splitlines()[0][:160]})") from None

    def pre_tokens(self, text: str) -> list[str]:
        """`text` through the normalizer and pre-tokenizer: byte-level pre-token strings."""
        tok = self.backend
        if tok.normalizer is not None:
            text = tok.normalizer.normalize_str(text)
        if tok.pre_tokenizer is None:
            return [to_byte_level(text.encode("utf-8"))]
        return [piece for piece, _ in tok.pre_tokenizer.pre_tokenize_str(text)]


class Merger:
    """Base vocabulary + appended tokens/merges, and the rank-order BPE of one pre-token."""

    def __init__(self, base: ByteBpe):
        self.base = base
        self.vocab = dict(base.vocab)
        self.ranks = {pair: i for i, pair in enumerate(base.merges)}
        self.new_tokens: list[str] = []
        self.new_merges: list[tuple[str, str]] = []
        self.next_id = base.size
        self.taken = set(self.vocab) | {t["content"] for t in base.added_tokens}

    def encode_word(self, word: str) -> list[str]:
        """`tokenizers`' BPE on one byte-level pre-token: the lowest-rank pair first, leftmost on ties."""
        if self.base.ignore_merges and word in self.vocab:
            return [word]
        parts = list(word)
        while len(parts) > 1:
            best, at = None, -1
            for i in range(len(parts) - 1):
                rank = self.ranks.get((parts[i], parts[i + 1]))
                if rank is not None and (best is None or rank < best):
                    best, at = rank, i
            if best is None:
                break
            parts[at : at + 2] = [parts[at] + parts[at + 1]]
        return parts

    def _append(self, left: str, right: str) -> None:
        token = left + right
        if token not in self.vocab:
            self.vocab[token] = self.next_id
            self.next_id += 1
            self.new_tokens.append(token)
            self.taken.add(token)
        self.ranks[(left, right)] = len(self.ranks)
        self.new_merges.append((left, right))

    def add(self, token: str) -> str:
        """Make `token` one token of the merged vocabulary; the outcome ('added', 'duplicate', ...)."""
        data = token_bytes(token)
        if not token or data is None:
            return "unreachable"
        if token in self.vocab:
            return "duplicate"
        if token in self.taken:  # the text of an added/special token of the base
            return "special"
        if all(b < 0x80 for b in data):
            return "ascii"
        parts = self.encode_word(token)
        if any(p not in self.vocab for p in parts):
            return "unreachable"
        while len(parts) > 1:
            at = 0
            if len(parts) > 2:  # an intermediate token: the leftmost pair that holds a non-ASCII byte
                at = next(i for i in range(len(parts) - 1) if not is_ascii_token(parts[i] + parts[i + 1]))
            self._append(parts[at], parts[at + 1])
            shorter = self.encode_word(token)
            if len(shorter) >= len(parts):  # cannot happen for a well-formed base; never loop
                return "unreachable"
            parts = shorter
        return "added"


# ---- where new tokens come from -------------------------------------------------------------------
def _sentencepiece_texts(path: Path) -> Iterator[str]:
    from zhllama.core import spm

    proto = spm.load_proto(path)
    for piece in proto.pieces:
        if piece.type in (spm.NORMAL, spm.USER_DEFINED):
            yield piece.piece.replace("▁", " ")


def _word_list_texts(path: Path) -> Iterator[str]:
    for line in iter_text_lines(path):
        word = line.strip()
        if word:
            yield word


def addition_kind(path: Path) -> str:
    """'byte-bpe' (tokenizer.json), 'sentencepiece' (.model) or 'words' (a text file, one per line)."""
    if path.is_dir():
        if (path / "tokenizer.model").is_file():
            return "sentencepiece"
        if (path / "tokenizer.json").is_file():
            return "byte-bpe"
        raise UserError(f"{path}: no tokenizer.model or tokenizer.json in this folder")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix == ".json":
        return "byte-bpe"
    if path.suffix == ".model":
        return "sentencepiece"
    if path.suffix == ".txt":
        return "words"
    head = path.open("rb").read(64)
    if head.lstrip().startswith(b"{"):
        return "byte-bpe"
    if head[:1] == b"\n":  # a serialized ModelProto starts with field 1 (pieces)
        return "sentencepiece"
    return "words"


def check_addition(path: Path) -> str:
    """Read an addition fully before anything is written; its kind."""
    kind = addition_kind(path)
    if kind == "byte-bpe":
        ByteBpe.load(path, role="byte-level addition")
    elif kind == "sentencepiece":
        from zhllama.core import spm

        spm.load_proto(spm.resolve_model_file(path))
    elif not any(True for _ in _word_list_texts(path)):
        raise UserError(f"{path}: word list is empty")
    return kind


def add_from(merger: Merger, path: Path, kind: str) -> dict:
    """Feed one addition to `merger`: trained merges in rank order, pieces/words in file order."""
    counts = {"added": 0, "intermediate": 0, "duplicate": 0, "ascii": 0, "special": 0, "unreachable": 0}
    before = len(merger.new_tokens)
    if kind == "byte-bpe":
        added = ByteBpe.load(path, role="byte-level addition")
        specials = {t["content"] for t in added.added_tokens}
        tokens = [a + b for a, b in added.merges]
        tokens += [t for t, _ in sorted(added.vocab.items(), key=lambda kv: kv[1]) if t not in specials]
        seen: set[str] = set()
        candidates = []
        for t in tokens:
            if t not in seen:
                seen.add(t)
                candidates.append(t)
    else:
        from zhllama.core import spm

        texts = (
            _sentencepiece_texts(spm.resolve_model_file(path)) if kind == "sentencepiece" else _word_list_texts(path)
        )
        candidates = []
        for text in texts:
            pieces = merger.base.pre_tokens(text)
            if len(pieces) == 1:
                candidates.append(pieces[0])
            else:
                counts["unreachable"] += 1  # splits into several pre-tokens of the base: never one token
    for token in candidates:
        outcome = merger.add(token)
        counts[outcome] += 1
    counts["intermediate"] = len(merger.new_tokens) - before - counts["added"]
    return counts


# ---- merge -------------------------------------------------------------------------------------------
@dataclass
class BpeMergeReport:
    base: str
    added_models: list[str]
    base_size: int
    added: int
    intermediate: int
    skipped_duplicates: int
    skipped_ascii: int
    skipped_unreachable: int
    padding: int
    final_size: int
    new_merges: int
    llama_cpp_pre: str | None
    per_model: list[dict] = field(default_factory=list)
    kind: str = "byte-bpe"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def llama_cpp_pre_of(base: ByteBpe) -> str | None:
    """llama.cpp's pre-tokenizer name for the base (its check-text hash), None when llama.cpp lacks it."""
    from hashlib import sha256

    from zhllama.core.quantize.llama_cpp_pre import CHECK_TEXT, PRE_TOKENIZERS

    folder = base.folder
    if folder is not None and (folder / "tokenizer_config.json").is_file():
        recorded = (read_json(folder / "tokenizer_config.json").get(RECORD_KEY) or {}).get("llama_cpp_pre")
        if recorded:  # a base that is itself a merge result
            return recorded
        from transformers import AutoTokenizer

        try:
            ids = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False).encode(CHECK_TEXT)
        except Exception:
            ids = base.backend.encode(CHECK_TEXT).ids
    else:
        ids = base.backend.encode(CHECK_TEXT).ids
    return PRE_TOKENIZERS.get(sha256(str(ids).encode()).hexdigest())


def merged_json(base: ByteBpe, merger: Merger, padding: Sequence[tuple[str, int]]) -> dict:
    data = copy.deepcopy(base.data)
    model = data["model"]
    vocab = model["vocab"]
    for token in base.added_tokens:  # see `merge`: added tokens past the model vocabulary keep their ids
        vocab.setdefault(token["content"], token["id"])
    for token in merger.new_tokens:
        vocab[token] = merger.vocab[token]
    strings = bool(model["merges"]) and isinstance(model["merges"][0], str)
    model["merges"] += [f"{a} {b}" if strings else [a, b] for a, b in merger.new_merges]
    added = data.setdefault("added_tokens", []) if padding else data.get("added_tokens")
    for content, idx in padding:
        added.append(
            {
                "id": idx,
                "content": content,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )
    return data


def merge(
    base: str | Path,
    additions: Sequence[str | Path],
    output: str | Path,
    pad_to_multiple_of: int | None = None,
    force: bool = False,
) -> BpeMergeReport:
    """Append the new (non-ASCII) tokens of `additions` to a byte-level BPE base; write a tokenizer folder."""
    from zhllama.core.atomic import atomic_dir, check_output_dir

    if not additions:
        raise UserError("--add: give at least one tokenizer.json, SentencePiece model or word list to merge")
    if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
        raise UserError(f"--pad-to-multiple-of: {pad_to_multiple_of} must be a positive integer")
    check_output(output, [base, *additions])
    check_output_dir(Path(output), force)
    base_bpe = ByteBpe.load(base, role="byte-level base")
    folder = base_bpe.folder
    configs = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if folder is not None and (folder / name).is_file():
            configs[name] = read_json(folder / name)
    kinds = [check_addition(Path(a)) for a in additions]
    base_bpe.backend  # noqa: B018 - the library must read the base before anything is written
    merger = Merger(base_bpe)
    per_model = []
    for path, kind in zip(additions, kinds, strict=True):
        counts = add_from(merger, Path(path), kind)
        per_model.append({"file": str(path), "kind": kind, **counts})
    total = merger.next_id
    padding = []
    if pad_to_multiple_of:
        names = (PAD_TOKEN.format(k) for k in range(10**9))
        while total % pad_to_multiple_of:
            name = next(names)
            if name in merger.taken:
                continue
            padding.append((name, total))
            total += 1
    pre = llama_cpp_pre_of(base_bpe)
    data = merged_json(base_bpe, merger, padding)
    report = BpeMergeReport(
        base=str(base_bpe.path),
        added_models=[str(a) for a in additions],
        base_size=base_bpe.size,
        added=sum(m["added"] for m in per_model),
        intermediate=sum(m["intermediate"] for m in per_model),
        skipped_duplicates=sum(m["duplicate"] for m in per_model),
        skipped_ascii=sum(m["ascii"] for m in per_model),
        skipped_unreachable=sum(m["unreachable"] + m["special"] for m in per_model),
        padding=len(padding),
        final_size=total,
        new_merges=len(merger.new_merges),
        llama_cpp_pre=pre,
        per_model=per_model,
    )
    config = configs.get("tokenizer_config.json") or {"tokenizer_class": "PreTrainedTokenizerFast"}
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        for content, idx in padding:
            decoder[str(idx)] = {
                "content": content,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
    config[RECORD_KEY] = {"base_size": base_bpe.size, "llama_cpp_pre": pre}
    configs["tokenizer_config.json"] = config
    with atomic_dir(output, force=force) as tmp:
        text = json.dumps(data, ensure_ascii=False, indent=2)
        from tokenizers import Tokenizer

        Tokenizer.from_str(text)  # the library reads what we write
        (tmp / "tokenizer.json").write_text(text + "\n", encoding="utf-8")
        for name, content in configs.items():
            (tmp / name).write_text(json.dumps(content, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        if folder is not None and (folder / "chat_template.jinja").is_file():
            (tmp / "chat_template.jinja").write_bytes((folder / "chat_template.jinja").read_bytes())
        (tmp / "merge_report.json").write_text(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n")
    return report


SPECIAL_PRESETS: dict[str, dict] = {
    "none": {"tokens": ()},
    "llama3": {
        "tokens": ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "bos": "<|begin_of_text|>",
        "eos": "<|end_of_text|>",
    },
    "chatml": {"tokens": ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), "eos": "<|im_end|>", "pad": "<|endoftext|>"},
}


# ---- train ---------------------------------------------------------------------------------------------
@dataclass
class ByteBpeTrainResult:
    output: str
    pieces: int
    seconds: float
    megabytes: float
    mb_per_second: float
    kind: str = "byte-bpe"


def train(
    inputs: Sequence[str | Path],
    vocab_size: int,
    output: str | Path,
    base: str | Path | None = None,
    min_frequency: int = 2,
    max_token_length: int | None = 24,
    special_tokens: str = "none",
    force: bool = True,
) -> ByteBpeTrainResult:
    """Train a byte-level BPE vocabulary with `tokenizers`' BpeTrainer, streaming the corpus.

    With `base`, the base's normalizer and pre-tokenizer are used (so the new tokens fit the base's
    pre-tokens when merged); else GPT-2's regex with ByteLevel. `max_token_length` (in bytes;
    None: no limit) keeps tokens short: pre-tokenizers that keep a run of CJK characters as one
    pre-token let repeated phrases become tokens, and llama-cpp-python's `detokenize` renders at
    most 32 bytes per token (longer ones come back empty).

    An `output` ending in `.json` is the tokenizer.json file (a vocabulary to `vocab merge`); else a
    tokenizer folder (tokenizer.json + tokenizer_config.json) that `tiny-model` and the training
    commands take, with the special tokens of `special_tokens` (`llama3`: Llama-3's, BOS added
    by the post-processor; `chatml`: Qwen's) after the trained vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from zhllama.core import console
    from zhllama.core.atomic import atomic_dir, atomic_path, check_output_dir, check_output_file

    files = [Path(f) for f in inputs]
    if not files:
        raise UserError("--input: give at least one text file")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size <= len(alphabet):
        raise UserError(f"--vocab-size: {vocab_size} must be above the {len(alphabet)} byte tokens of a byte-level BPE")
    if special_tokens not in SPECIAL_PRESETS:
        raise UserError(f"--special-tokens: '{special_tokens}' is not one of {', '.join(SPECIAL_PRESETS)}")
    as_file = Path(output).suffix == ".json"
    if as_file and special_tokens != "none":
        raise UserError("--special-tokens: give a folder as --output (a .json output is a bare vocabulary to merge)")
    if min_frequency < 1:
        raise UserError(f"--min-frequency: {min_frequency} must be at least 1")
    if max_token_length is not None and max_token_length < 2:
        raise UserError(f"--max-token-length: {max_token_length} must be at least 2")
    check_output(output, [*files, *([base] if base else [])])
    if as_file:
        check_output_file(Path(output), force)
    else:
        check_output_dir(Path(output), force)
    base_bpe = ByteBpe.load(base, role="--base") if base is not None else None
    lines = sizes = 0
    for f in files:
        for line in iter_text_lines(f):  # reads every file once: UTF-8 errors name file and byte
            if line.strip():
                lines += 1
        sizes += f.stat().st_size
    if lines == 0:
        raise UserError(f"{', '.join(map(str, files))}: corpus is empty")
    tokenizer = Tokenizer(models.BPE())
    if base_bpe is not None:
        tokenizer.normalizer = base_bpe.backend.normalizer
        tokenizer.pre_tokenizer = base_bpe.backend.pre_tokenizer
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=alphabet,
        special_tokens=[],
        show_progress=False,
        max_token_length=max_token_length,
    )
    from rich.progress import TransferSpeedColumn

    start = time.perf_counter()
    with console.make_progress(TransferSpeedColumn()) as progress:
        task = progress.add_task("reading corpus", total=sizes)

        def stream() -> Iterator[str]:
            for f in files:
                for line in iter_text_lines(f):
                    progress.update(task, advance=len(line.encode("utf-8")) + 1)
                    if line.strip():
                        yield line

        tokenizer.train_from_iterator(stream(), trainer=trainer, length=lines)
    seconds = time.perf_counter() - start
    if as_file:
        with atomic_path(output, force=force) as tmp:
            tokenizer.save(str(tmp))
    else:
        preset = SPECIAL_PRESETS[special_tokens]
        tokenizer.add_special_tokens(list(preset["tokens"]))
        if preset.get("bos"):
            from tokenizers import processors

            bos = preset["bos"]
            tokenizer.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
            )
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": 8192,
            "clean_up_tokenization_spaces": False,
        }
        config.update({f"{k}_token": v for k, v in preset.items() if k in ("bos", "eos", "pad") and v})
        with atomic_dir(output, force=force) as tmp:
            tokenizer.save(str(tmp / "tokenizer.json"))
            (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    mb = sizes / 1e6
    return ByteBpeTrainResult(str(output), tokenizer.get_vocab_size(), seconds, mb, mb / seconds if seconds else 0.0)


# ---- stats helpers --------------------------------------------------------------------------------------
class JsonTokenizer:
    """A bare tokenizer.json for `vocab stats` (no special tokens added, as ZhTokenizer.encode)."""

    def __init__(self, path: Path):
        self.bpe = ByteBpe.load(path, role="--tokenizer")
        self.tok = self.bpe.backend

    def __len__(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, lines: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(lines, add_special_tokens=False)]

    def id_to_piece(self, idx: int) -> str | None:
        return self.tok.id_to_token(idx)


def partial_character(piece: str | None) -> bool:
    """A byte-level token whose bytes are not whole UTF-8 characters (a piece of a character)."""
    data = token_bytes(piece) if piece else None
    if data is None:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def is_byte_level_folder(path: Path) -> bool:
    return path.is_dir() and not (path / "tokenizer.model").is_file() and (path / "tokenizer.json").is_file()
