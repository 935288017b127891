"""The table of bad-input cases: one row per hostile command line (issue 18).

Each row: an id, the kind of mistake (the issue's categories), the argv built from a case's
private `Workspace`, the exit code and a regex the single `zhllama: error:` line must match.
`pending` names the owner whose fix has not landed yet: such rows run as non-strict xfail.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zhllama.core.assets import data_path

KINDS = (
    "non-utf8",  # non-UTF-8 text where UTF-8 is required
    "output-is-input",  # output equal to / inside / containing an input, even with --force
    "option-range",  # a value outside its range, of the wrong type, or unknown
    "missing-input",  # input file/folder absent or of the wrong kind
    "corrupt-file",  # truncated / malformed model, adapter, config, data
    "existing-output",  # output exists (no --force), or is a file where a folder goes
    "mismatch",  # model / adapter / tokenizer that do not belong together
    "usage",  # unknown command/option, missing required option, bad --config
)


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    argv: Callable  # (Workspace) -> list of args
    match: str  # regex searched in the error line
    code: int = 2
    pending: str | None = None  # owner whose fix has not landed


# ---- crafted inputs -------------------------------------------------------------------------------


def _copy_model(w, path: Path) -> None:
    shutil.copytree(w.model, path)


def model_without(name: str):
    def build(w, path: Path) -> None:
        _copy_model(w, path)
        (path / name).unlink()

    return build


def model_with_file(name: str, content: bytes):
    def build(w, path: Path) -> None:
        _copy_model(w, path)
        (path / name).write_bytes(content)

    return build


def truncated(keep: Callable[[int], int], name: str = "model.safetensors", source: str = "model"):
    def build(w, path: Path) -> None:
        shutil.copytree(getattr(w, source), path)
        data = (path / name).read_bytes()
        (path / name).write_bytes(data[: keep(len(data))])

    return build


def header_offsets_past_end(w, path: Path) -> None:
    """Same size as the real file, but the header claims a tensor ends beyond the file."""
    _copy_model(w, path)
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    key = next(k for k in header if k != "__metadata__")
    begin, end = header[key]["data_offsets"]
    header[key]["data_offsets"] = [begin + len(data), end + len(data)]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    weights.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])


def index_missing_shard(w, path: Path) -> None:
    _copy_model(w, path)
    weights = path / "model.safetensors"
    weights.rename(path / "model-00001-of-00002.safetensors")
    from safetensors import safe_open

    with safe_open(path / "model-00001-of-00002.safetensors", "np") as f:
        keys = list(f.keys())
    weight_map = {k: "model-00001-of-00002.safetensors" for k in keys}
    weight_map[keys[-1]] = "model-00002-of-00002.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def adapter_edit(edit: Callable[[dict], None]):
    def build(w, path: Path) -> None:
        shutil.copytree(w.lora, path)
        cfg = path / "adapter_config.json"
        config = json.loads(cfg.read_text())
        edit(config)
        cfg.write_text(json.dumps(config))

    return build


def adapter_for_other_base(w, path: Path) -> None:
    """A LoRA whose A matrices expect hidden size 32 (the tiny model has 64)."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(w.lora, path)
    tensors = load_file(path / "adapter_model.safetensors")
    resized = {k: (v[:, :32].copy() if "lora_A" in k else v[:32].copy()) for k, v in tensors.items()}
    save_file(resized, path / "adapter_model.safetensors")


def copy_into(source: str, sub: str):
    """`in/NAME/`: a folder holding a copy of source `source` as `sub` (an output may not contain it)."""

    def build(w, path: Path) -> None:
        path.mkdir()
        src = getattr(w, source)
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, path / sub)

    return build


def ceval_header_only(w, path: Path) -> None:
    shutil.copytree(w.ceval, path)
    for split in ("val", "dev"):
        for csv in (path / split).glob("*.csv"):
            csv.write_text(csv.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")


def conversation_turn_not_object(w, path: Path) -> None:
    path.write_text(json.dumps({"conversations": ["hello", {"from": "gpt", "value": "hi"}]}) + "\n")


def _unigram(w, path: Path) -> None:
    from zhllama.core import vocab

    vocab.train([data_path("corpus_en.txt")], 300, path, model_type="unigram")


def predictions_symlink(w, path: Path) -> None:
    """A results folder whose predictions.jsonl is a symlink to an input (appending would corrupt it)."""
    path.mkdir()
    (path / "predictions.jsonl").symlink_to(w.text)


def run_folder_with_ds_config(w, path: Path) -> None:
    """An earlier run's folder holding the DeepSpeed config the new run is pointed at."""
    path.mkdir()
    (path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))


def busy_port(w) -> int:
    """A loopback port some other socket is listening on (held open for the case's lifetime)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    w.__dict__.setdefault("_held_sockets", []).append(sock)
    return sock.getsockname()[1]


# ---- crafted inputs for the loading-path validation (issue 24) ------------------------------------


def _split_shards(path: Path) -> dict:
    """Split `path/model.safetensors` into two shards + an index (returned, not yet written)."""
    from safetensors.numpy import load_file, save_file

    state = load_file(path / "model.safetensors")
    (path / "model.safetensors").unlink()
    keys = sorted(state)
    names = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "x.safetensors": keys[len(keys) // 2 :]}
    for name, part in names.items():
        save_file({k: state[k] for k in part}, path / name)
    return {"metadata": {}, "weight_map": {k: name for name, part in names.items() for k in part}}


def index_outside_folder(w, path: Path) -> None:
    """An index whose weight_map names `../x.safetensors`: a valid shard, but outside the folder."""
    _copy_model(w, path)
    index = _split_shards(path)
    os.replace(path / "x.safetensors", path.parent / "x.safetensors")
    index["weight_map"] = {
        k: ("../x.safetensors" if v == "x.safetensors" else v) for k, v in index["weight_map"].items()
    }
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def shard_symlink_outside(w, path: Path) -> None:
    """An index entry inside the folder that is a symlink to a shard outside it."""
    _copy_model(w, path)
    index = _split_shards(path)
    os.replace(path / "x.safetensors", path.parent / "x.safetensors")
    (path / "x.safetensors").symlink_to(path.parent / "x.safetensors")
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


class _Mkdir:
    """Unpickling this creates a folder: proof that a pickle ran code (it must never exist)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil(path: Path, marker: Path) -> None:
    import torch

    torch.save({"weight": torch.zeros(2), "payload": _Mkdir(marker)}, path)


def model_with_evil_bin(w, path: Path) -> None:
    _copy_model(w, path)
    (path / "model.safetensors").unlink()
    _evil(path / "pytorch_model.bin", w.root / "pwned")


def adapter_with_evil_bin(w, path: Path) -> None:
    shutil.copytree(w.lora, path)
    (path / "adapter_model.safetensors").unlink()
    _evil(path / "adapter_model.bin", w.root / "pwned")


def truncated_gguf(w, path: Path) -> None:
    """A GGUF header announcing one 32-float tensor whose bytes are missing."""
    import struct

    name = b"token_embd.weight"
    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 0)
    header += struct.pack("<Q", len(name)) + name + struct.pack("<IQIQ", 1, 32, 0, 0)
    path.write_bytes(header + b"\0" * (-len(header) % 32) + b"\0" * 64)


def _prediction_record(i: int) -> dict:
    return {"subject": "computer_network", "id": i, "prompt_hash": f"{i:016x}", "prediction": "A", "gold": "A"}


def predictions_corrupt(w, path: Path) -> None:
    """A results folder whose predictions.jsonl has a garbled line in the middle."""
    path.mkdir()
    lines = [
        json.dumps(_prediction_record(0)),
        '{"subject": "computer_network", "id": 1, "pro',
        json.dumps(_prediction_record(2)),
    ]
    (path / "predictions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def predictions_foreign(w, path: Path) -> None:
    """A results folder whose predictions.jsonl is some other JSON-lines file (no subject/prompt_hash)."""
    path.mkdir()
    shutil.copyfile(w.conversations, path / "predictions.jsonl")


def predict_output_corrupt(w, path: Path) -> None:
    lines = ["not json at all", json.dumps({"index": 0, "id": 0, "prompt": "x", "prediction": "y"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def predict_output_foreign(w, path: Path) -> None:
    record = {"index": 0, "id": 12345, "prompt": "another input's prompt", "prediction": "y"}
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")


# ---- the table ------------------------------------------------------------------------------------

CASES: list[Case] = [
    # vocab train
    Case(
        "vocab-train-non-utf8",
        "non-utf8",
        lambda w: ["vocab", "train", "-i", w.bad_text, "--vocab-size", 50, "-o", w.out],
        r"bad_text\.txt: not UTF-8 text \(byte 25",
    ),
    Case(
        "vocab-train-output-is-corpus",
        "output-is-input",
        lambda w: ["vocab", "train", "-i", w.text, "--vocab-size", 300, "-o", w.text, "--force"],
        r"output is the input .*text\.txt",
    ),
    Case(
        "vocab-train-output-symlink-to-corpus",
        "output-is-input",
        lambda w: [
            "vocab",
            "train",
            "-i",
            w.text,
            "--vocab-size",
            300,
            "-o",
            w.make("link", lambda w, p: p.symlink_to(w.text)),
            "--force",
        ],
        r"output is the input",
    ),
    Case(
        "vocab-train-output-is-folder",
        "existing-output",
        lambda w: ["vocab", "train", "-i", w.text, "--vocab-size", 300, "-o", w.outputs, "--force"],
        r"existing folder",
    ),
    Case(
        "vocab-train-output-exists",
        "existing-output",
        lambda w: ["vocab", "train", "-i", w.text, "--vocab-size", 300, "-o", w.sp],
        r"exists \(use --force",
    ),
    Case(
        "vocab-train-missing-input",
        "missing-input",
        lambda w: ["vocab", "train", "-i", w.inputs / "nope.txt", "--vocab-size", 300, "-o", w.out],
        r"nope\.txt: no such file",
    ),
    Case(
        "vocab-train-input-is-folder",
        "missing-input",
        lambda w: ["vocab", "train", "-i", w.inputs, "--vocab-size", 300, "-o", w.out],
        r"is a folder",
    ),
    Case(
        "vocab-train-empty-corpus",
        "corrupt-file",
        lambda w: ["vocab", "train", "-i", w.empty_text, "--vocab-size", 300, "-o", w.out],
        r"corpus is empty",
    ),
    Case(
        "vocab-train-vocab-size-0",
        "option-range",
        lambda w: ["vocab", "train", "-i", w.text, "--vocab-size", 0, "-o", w.out],
        r"--vocab-size: 0",
    ),
    Case(
        "vocab-train-vocab-size-too-large",
        "option-range",
        lambda w: ["vocab", "train", "-i", w.text, "--vocab-size", 100000, "-o", w.out],
        r"--vocab-size: 100000 is larger than the corpus supports",
    ),
    Case(
        "vocab-train-vocab-size-not-int",
        "option-range",
        lambda w: ["vocab", "train", "-i", w.text, "--vocab-size", "many", "-o", w.out],
        r"Invalid value for '--vocab-size'",
    ),
    Case(
        "vocab-train-model-type",
        "option-range",
        lambda w: ["vocab", "train", "-i", w.text, "--vocab-size", 300, "--model-type", "wordpiece", "-o", w.out],
        r"--model-type: 'wordpiece'",
    ),
    Case(
        "vocab-train-character-coverage",
        "option-range",
        lambda w: ["vocab", "train", "-i", w.text, "--vocab-size", 300, "--character-coverage", 1.5, "-o", w.out],
        r"--character-coverage: 1\.5",
    ),
    Case(
        "vocab-train-missing-output-option",
        "usage",
        lambda w: ["vocab", "train", "-i", w.text, "--vocab-size", 300],
        r"Missing option '--output'",
    ),
    # vocab merge
    Case(
        "vocab-merge-output-is-base-folder",
        "output-is-input",
        lambda w: ["vocab", "merge", "--base", w.base_tok, "--add", w.sp, "-o", w.base_tok, "--force"],
        r"output is the input .*base_tok",
    ),
    Case(
        "vocab-merge-output-contains-add",
        "output-is-input",
        lambda w: [
            "vocab",
            "merge",
            "--base",
            w.base_tok,
            "--add",
            w.make("dir", copy_into("sp", "zh.model")) / "zh.model",
            "-o",
            w.inputs / "dir",
            "--force",
        ],
        r"output contains the input",
    ),
    Case(
        "vocab-merge-output-inside-base",
        "output-is-input",
        lambda w: ["vocab", "merge", "--base", w.base_tok, "--add", w.sp, "-o", w.base_tok / "merged"],
        r"output sits inside the input",
    ),
    Case(
        "vocab-merge-base-not-sentencepiece",
        "corrupt-file",
        lambda w: ["vocab", "merge", "--base", w.garbage, "--add", w.sp, "-o", w.out],
        r"garbage\.bin: not a SentencePiece model",
    ),
    Case(
        "vocab-merge-base-folder-without-model",
        "missing-input",
        lambda w: ["vocab", "merge", "--base", w.make("empty", lambda w, p: p.mkdir()), "--add", w.sp, "-o", w.out],
        r"empty: (folder holds )?no tokenizer\.model",  # the BPE work names tokenizer.json too
    ),
    Case(
        "vocab-merge-missing-add",
        "missing-input",
        lambda w: ["vocab", "merge", "--base", w.base_tok, "--add", w.inputs / "zh.model", "-o", w.out],
        r"zh\.model: no such file",
    ),
    Case(
        "vocab-merge-unigram-base",
        "mismatch",
        lambda w: ["vocab", "merge", "--base", w.make("uni", _unigram, ".model"), "--add", w.sp, "-o", w.out],
        r"must be a SentencePiece BPE model",
    ),
    Case(
        "vocab-merge-output-not-empty",
        "existing-output",
        lambda w: ["vocab", "merge", "--base", w.base_tok, "--add", w.sp, "-o", w.tok],
        r"not empty \(use --force",
    ),
    Case(
        "vocab-merge-output-is-file",
        "existing-output",
        lambda w: ["vocab", "merge", "--base", w.base_tok, "--add", w.sp, "-o", w.text, "--force"],
        r"existing file",
    ),
    Case(
        "vocab-merge-empty-pad-token",
        "option-range",
        lambda w: ["vocab", "merge", "--base", w.base_tok, "--add", w.sp, "--pad-token", "", "-o", w.out],
        r"--pad-token: must not be empty",
    ),
    Case(
        "vocab-merge-pad-token-is-bos",
        "option-range",
        lambda w: ["vocab", "merge", "--base", w.base_tok, "--add", w.sp, "--pad-token", "<s>", "-o", w.out],
        r"--pad-token: '<s>' is already the bos token",
    ),
    Case(
        "vocab-merge-output-under-a-file",
        "existing-output",
        lambda w: ["vocab", "merge", "--base", w.base_tok, "--add", w.sp, "-o", w.text / "merged"],
        r"text\.txt is not a folder",
    ),
    # vocab stats
    Case(
        "vocab-stats-non-utf8",
        "non-utf8",
        lambda w: ["vocab", "stats", "-t", w.base_tok, "--text", w.bad_text],
        r"bad_text\.txt: not UTF-8 text \(byte 25: invalid continuation byte\)",
    ),
    Case(
        "vocab-stats-missing-text",
        "missing-input",
        lambda w: ["vocab", "stats", "-t", w.base_tok, "--text", w.inputs / "none.txt"],
        r"none\.txt: no such file",
    ),
    Case(
        "vocab-stats-text-is-folder",
        "missing-input",
        lambda w: ["vocab", "stats", "-t", w.base_tok, "--text", w.inputs],
        r"is a folder",
    ),
    Case(
        "vocab-stats-empty-text",
        "corrupt-file",
        lambda w: ["vocab", "stats", "-t", w.base_tok, "--text", w.empty_text],
        r"text file is empty",
    ),
    Case(
        "vocab-stats-missing-tokenizer",
        "missing-input",
        lambda w: ["vocab", "stats", "-t", w.inputs / "tok-missing", "--text", w.text],
        r"tok-missing",
    ),
    Case(
        "vocab-stats-tokenizer-garbage",
        "corrupt-file",
        lambda w: ["vocab", "stats", "-t", w.garbage, "--text", w.text],
        r"garbage\.bin",
    ),
    Case(
        "vocab-train-unigram-low-coverage",
        "option-range",
        lambda w: [
            "vocab",
            "train",
            "-i",
            w.text,
            "--vocab-size",
            300,
            "--model-type",
            "unigram",
            "--character-coverage",
            0.5,
            "-o",
            w.out,
        ],
        r"--character-coverage: 0\.5 is below 0\.98",
    ),
    # global usage
    Case(
        "json-mode-error-keeps-stdout-empty",
        "non-utf8",
        lambda w: ["--json", "vocab", "stats", "-t", w.base_tok, "--text", w.bad_text],
        r"bad_text\.txt: not UTF-8 text",
    ),
    Case(
        "quiet-mode-error-still-one-line",
        "option-range",
        lambda w: ["--quiet", "vocab", "train", "-i", w.text, "--vocab-size", 100000, "-o", w.out],
        r"--vocab-size: 100000",
    ),
    Case("unknown-command", "usage", lambda w: ["vocabulary"], r"No such command 'vocabulary'"),
    Case("unknown-option", "usage", lambda w: ["vocab", "stats", "--txt", w.text], r"No such option: --txt"),
    Case(
        "config-missing",
        "usage",
        lambda w: ["--config", w.inputs / "c.yaml", "vocab", "stats"],
        r"c\.yaml: config file not found",
    ),
    Case(
        "config-invalid-yaml",
        "usage",
        lambda w: ["--config", w.broken_yaml, "vocab", "stats"],
        r"broken_yaml\.yaml: invalid YAML",
    ),
    Case(
        "config-non-utf8",
        "non-utf8",
        lambda w: ["--config", w.bad_text, "vocab", "stats"],
        r"bad_text\.txt: not UTF-8 text \(byte 25",
    ),
    Case(
        "vocab-train-input-is-fifo",
        "missing-input",
        lambda w: ["vocab", "train", "-i", w.make("fifo", lambda w, p: os.mkfifo(p)), "--vocab-size", 300, "-o", w.out],
        r"fifo: not a regular file",
    ),
    Case(
        "config-unknown-key",
        "usage",
        lambda w: ["--config", w.unknown_key_yaml, "vocab", "stats", "-t", w.tok, "--text", w.text],
        r"unknown option 'vocab-sise'",
    ),
    # merge
    Case(
        "merge-output-is-base",
        "output-is-input",
        lambda w: ["merge", "--base", w.model, "--lora", w.lora, "-o", w.model, "--force"],
        r"output is the input .*model",
    ),
    Case(
        "merge-output-is-adapter",
        "output-is-input",
        lambda w: ["merge", "--base", w.model, "--lora", w.lora, "-o", w.lora, "--force"],
        r"output is the input .*lora",
    ),
    Case(
        "merge-output-inside-base",
        "output-is-input",
        lambda w: ["merge", "--base", w.model, "--lora", w.lora, "-o", w.model / "merged"],
        r"output sits inside the input",
    ),
    Case(
        "merge-truncated-base-1000",
        "corrupt-file",
        lambda w: ["merge", "--base", w.make("trunc", truncated(lambda n: n - 1000)), "--lora", w.lora, "-o", w.out],
        r"trunc/model\.safetensors: not a valid safetensors file .*truncated",
    ),
    Case(
        "merge-truncated-base-half",
        "corrupt-file",
        lambda w: ["merge", "--base", w.make("half", truncated(lambda n: n // 2)), "--lora", w.lora, "-o", w.out],
        r"half/model\.safetensors: not a valid safetensors file .*truncated",
    ),
    Case(
        "merge-header-offsets-past-end",
        "corrupt-file",
        lambda w: ["merge", "--base", w.make("offsets", header_offsets_past_end), "--lora", w.lora, "-o", w.out],
        r"offsets/model\.safetensors: not a valid safetensors file",
    ),
    Case(
        "merge-index-missing-shard",
        "corrupt-file",
        lambda w: ["merge", "--base", w.make("index", index_missing_shard), "--lora", w.lora, "-o", w.out],
        r"index\.json: names shard 'model-00002-of-00002\.safetensors', which does not exist",
    ),
    Case(
        "merge-malformed-config",
        "corrupt-file",
        lambda w: [
            "merge",
            "--base",
            w.make("badcfg", model_with_file("config.json", b"{not json")),
            "--lora",
            w.lora,
            "-o",
            w.out,
        ],
        r"badcfg/config\.json: not valid JSON \(line 1, column 2: Expecting property name",
    ),
    Case(
        "merge-base-without-config",
        "missing-input",
        lambda w: ["merge", "--base", w.make("nocfg", model_without("config.json")), "--lora", w.lora, "-o", w.out],
        r"no config\.json",
    ),
    Case(
        "merge-adapter-without-r",
        "corrupt-file",
        lambda w: [
            "merge",
            "--base",
            w.model,
            "--lora",
            w.make("nor", adapter_edit(lambda c: c.pop("r"))),
            "-o",
            w.out,
        ],
        r"nor/adapter_config\.json: 'r' missing",
    ),
    Case(
        "merge-truncated-adapter",
        "corrupt-file",
        lambda w: [
            "merge",
            "--base",
            w.model,
            "--lora",
            w.make("tlora", truncated(lambda n: n - 100, "adapter_model.safetensors", "lora")),
            "-o",
            w.out,
        ],
        r"tlora/adapter_model\.safetensors: not a valid safetensors file .*truncated",
    ),
    Case(
        "merge-adapter-other-base",
        "mismatch",
        lambda w: ["merge", "--base", w.model, "--lora", w.make("other", adapter_for_other_base), "-o", w.out],
        r"other.*shape",
    ),
    Case(
        "merge-missing-adapter",
        "missing-input",
        lambda w: ["merge", "--base", w.model, "--lora", w.inputs / "no-lora", "-o", w.out],
        r"no-lora",
    ),
    Case(
        "merge-shard-size-0",
        "option-range",
        lambda w: ["merge", "--base", w.model, "--lora", w.lora, "--shard-size", "0", "-o", w.out],
        r"--shard-size",
    ),
    Case(
        "merge-shard-size-garbage",
        "option-range",
        lambda w: ["merge", "--base", w.model, "--lora", w.lora, "--shard-size", "big", "-o", w.out],
        r"--shard-size: 'big'",
    ),
    Case(
        "merge-dtype",
        "option-range",
        lambda w: ["merge", "--base", w.model, "--lora", w.lora, "--dtype", "fp8", "-o", w.out],
        r"--dtype.*'fp8'",
    ),
    Case(
        "merge-format",
        "option-range",
        lambda w: ["merge", "--base", w.model, "--lora", w.lora, "--format", "onnx", "-o", w.out],
        r"--format: 'onnx'",
    ),
    Case(
        "merge-output-not-empty",
        "existing-output",
        lambda w: ["merge", "--base", w.model, "--lora", w.lora, "-o", w.base_tok],
        r"not empty \(use --force",
    ),
    # quantize
    Case(
        "quantize-unknown-method",
        "option-range",
        lambda w: ["quantize", "3bit", "--model", w.model, "-o", w.out],
        r"'3bit'",
    ),
    Case(
        "quantize-gguf-output-is-weights",
        "output-is-input",
        lambda w: ["quantize", "gguf", "--model", w.model, "-o", w.model / "model.safetensors", "--force"],
        r"model\.safetensors: the output sits inside the input",
    ),
    Case(
        "quantize-4bit-output-is-model",
        "output-is-input",
        lambda w: ["quantize", "4bit", "--model", w.model, "-o", w.model, "--force"],
        r"output is the input",
    ),
    Case(
        "quantize-gguf-output-inside-model",
        "output-is-input",
        lambda w: ["quantize", "gguf", "--model", w.model, "-o", w.model / "m.gguf"],
        r"output sits inside the input",
    ),
    Case(
        "quantize-gguf-truncated",
        "corrupt-file",
        lambda w: [
            "quantize",
            "gguf",
            "--model",
            w.make("trunc", truncated(lambda n: n - 1000)),
            "-o",
            w.outputs / "m.gguf",
        ],
        r"trunc/model\.safetensors: not a valid safetensors file .*truncated",
    ),
    Case(
        "quantize-gguf-type",
        "option-range",
        lambda w: ["quantize", "gguf", "--model", w.model, "--type", "Q9_9", "-o", w.outputs / "m.gguf"],
        r"Q9_9",
    ),
    Case(
        "quantize-gguf-output-is-folder",
        "existing-output",
        lambda w: ["quantize", "gguf", "--model", w.model, "-o", w.outputs],
        r"folder",
    ),
    Case(
        "quantize-missing-model",
        "missing-input",
        lambda w: ["quantize", "gguf", "--model", w.inputs / "nomodel", "-o", w.outputs / "m.gguf"],
        r"nomodel",
    ),
    Case(
        "quantize-eval-ppl-non-utf8",
        "non-utf8",
        lambda w: ["quantize", "gguf", "--model", w.model, "--eval-ppl", w.bad_text, "-o", w.outputs / "m.gguf"],
        r"bad_text\.txt(:\d+)?: not UTF-8",
    ),
    # training (train engineer)
    Case(
        "pretrain-output-is-model",
        "output-is-input",
        lambda w: ["pretrain", "-m", w.model, "-d", w.text, "-o", w.model, "--force", "--max-steps", 1],
        r"output is the input",
    ),
    Case(
        "pretrain-output-contains-deepspeed-config",
        "output-is-input",
        lambda w: [
            "pretrain",
            "-m",
            w.model,
            "-d",
            w.text,
            "-o",
            w.make("run", run_folder_with_ds_config),
            "--force",
            "--deepspeed",
            w.inputs / "run" / "ds.json",
            "--max-steps",
            1,
        ],
        r"output contains the input .*run/ds\.json",
    ),
    Case(
        "pretrain-block-size-0",
        "option-range",
        lambda w: ["pretrain", "-m", w.model, "-d", w.text, "-o", w.out, "--block-size", 0],
        r"--block-size",
    ),
    Case(
        "pretrain-learning-rate-negative",
        "option-range",
        lambda w: ["pretrain", "-m", w.model, "-d", w.text, "-o", w.out, "--learning-rate", -1],
        r"--learning-rate",
    ),
    Case(
        "pretrain-batch-size-0",
        "option-range",
        lambda w: ["pretrain", "-m", w.model, "-d", w.text, "-o", w.out, "--per-device-train-batch-size", 0],
        r"--per-device-train-batch-size",
    ),
    Case(
        "pretrain-grad-accum-0",
        "option-range",
        lambda w: ["pretrain", "-m", w.model, "-d", w.text, "-o", w.out, "--gradient-accumulation-steps", 0],
        r"--gradient-accumulation-steps",
    ),
    Case(
        "pretrain-lora-rank-0",
        "option-range",
        lambda w: ["pretrain", "-m", w.model, "-d", w.text, "-o", w.out, "--lora-rank", 0],
        r"--lora-rank",
    ),
    Case(
        "pretrain-data-dir-with-json",
        "corrupt-file",
        lambda w: [
            "pretrain",
            "-m",
            w.model,
            "-d",
            w.make("jsondir", copy_into("instructions", "a.json")),
            "-o",
            w.out,
        ],
        r"jsondir: folder holds no \.txt/\.jsonl files",
    ),
    Case(
        "pretrain-non-utf8",
        "non-utf8",
        lambda w: ["pretrain", "-m", w.model, "-d", w.bad_text, "-o", w.out, "--max-steps", 1],
        r"bad_text\.txt(:\d+)?: not UTF-8",
    ),
    Case(
        "sft-non-utf8",
        "non-utf8",
        lambda w: ["sft", "-m", w.model, "-d", w.bad_text, "-o", w.out, "--max-steps", 1],
        r"bad_text\.txt(:\d+)?: not UTF-8",
    ),
    Case(
        "sft-max-seq-length-negative",
        "option-range",
        lambda w: ["sft", "-m", w.model, "-d", w.instructions, "-o", w.out, "--max-seq-length", -5],
        r"--max-seq-length",
    ),
    Case(
        "sft-turn-not-object",
        "corrupt-file",
        lambda w: ["sft", "-m", w.model, "-d", w.make("conv", conversation_turn_not_object, ".jsonl"), "-o", w.out],
        r"conv\.jsonl",
    ),
    Case(
        "sft-malformed-json",
        "corrupt-file",
        lambda w: ["sft", "-m", w.model, "-d", w.bad_json, "-o", w.out, "--max-steps", 1],
        r"bad_json\.json",
    ),
    Case(
        "sft-adapter-other-base",
        "mismatch",
        lambda w: [
            "sft",
            "-m",
            w.model,
            "-d",
            w.instructions,
            "--adapter",
            w.make("other", adapter_for_other_base),
            "-o",
            w.out,
        ],
        r"other.*(shape|size|hidden)",
    ),
    Case(
        "pretrain-report-to-missing-logger",
        "option-range",
        lambda w: ["pretrain", "-m", w.model, "-d", w.text, "-o", w.out, "--report-to", "wandb", "--max-steps", 1],
        r"wandb",
    ),
    # alignment (align engineer)
    Case(
        "dpo-output-is-model",
        "output-is-input",
        lambda w: ["dpo", "-m", w.model, "-d", w.prefs, "-o", w.model, "--force", "--max-steps", 1],
        r"output is the input",
    ),
    Case(
        "dpo-output-contains-data",
        "output-is-input",
        lambda w: ["dpo", "-m", w.model, "-d", w.prefs, "-o", w.inputs, "--force", "--max-steps", 1],
        r"output contains the input",
    ),
    Case(
        "dpo-non-utf8",
        "non-utf8",
        lambda w: [
            "dpo",
            "-m",
            w.model,
            "-d",
            w.make("p", lambda w, p: p.write_bytes(b'{"prompt": "\xff"}\n'), ".jsonl"),
            "-o",
            w.out,
            "--max-steps",
            1,
        ],
        r"p\.jsonl(:\d+)?: not UTF-8",
    ),
    Case(
        "dpo-pair-without-rejected",
        "corrupt-file",
        lambda w: [
            "dpo",
            "-m",
            w.model,
            "-d",
            w.make("p", lambda w, p: p.write_text('{"prompt": "a", "chosen": "b"}\n'), ".jsonl"),
            "-o",
            w.out,
            "--max-steps",
            1,
        ],
        r"p\.jsonl.*rejected",
    ),
    Case(
        "rm-learning-rate-negative",
        "option-range",
        lambda w: ["rm", "-m", w.model, "-d", w.prefs, "-o", w.out, "--learning-rate", -1],
        r"--learning-rate",
    ),
    Case(
        "ppo-output-is-reward-model",
        "output-is-input",
        lambda w: [
            "ppo",
            "-m",
            w.model,
            "-d",
            w.prefs,
            "--reward-model",
            w.make("rm", _copy_model),
            "-o",
            w.inputs / "rm",
            "--force",
            "--max-steps",
            1,
        ],
        r"output is the input .*rm",
    ),
    Case(
        "ppo-missing-reward-model",
        "missing-input",
        lambda w: [
            "ppo",
            "-m",
            w.model,
            "-d",
            w.prefs,
            "--reward-model",
            w.inputs / "no-rm",
            "-o",
            w.out,
            "--max-steps",
            1,
        ],
        r"no-rm",
    ),
    # eval (eval engineer)
    Case(
        "eval-ppl-non-utf8",
        "non-utf8",
        lambda w: ["eval", "ppl", "-m", w.model, "-d", w.bad_text],
        r"bad_text\.txt(:\d+)?: not UTF-8",
    ),
    Case(
        "eval-ppl-batch-size-0",
        "option-range",
        lambda w: ["eval", "ppl", "-m", w.model, "-d", w.text, "--batch-size", 0],
        r"--batch-size",
    ),
    Case(
        "eval-ppl-stride-beyond-context",
        "option-range",
        lambda w: ["eval", "ppl", "-m", w.model, "-d", w.text, "--context", 64, "--stride", 128],
        r"--stride",
    ),
    Case(
        "eval-ceval-limit-negative",
        "option-range",
        lambda w: ["eval", "ceval", "-m", w.model, "--data-dir", w.ceval, "-o", w.out, "--limit", -1],
        r"--limit",
    ),
    Case(
        "eval-ceval-header-only",
        "corrupt-file",
        lambda w: ["eval", "ceval", "-m", w.model, "--data-dir", w.make("hdr", ceval_header_only), "-o", w.out],
        r"\.csv",
    ),
    Case(
        "eval-ceval-output-is-file",
        "existing-output",
        lambda w: ["eval", "ceval", "-m", w.model, "--data-dir", w.ceval, "-o", w.text],
        r"text\.txt",
    ),
    Case(
        "eval-ceval-predictions-symlink",
        "existing-output",
        lambda w: [
            "eval",
            "ceval",
            "-m",
            w.model,
            "--data-dir",
            w.ceval,
            "-o",
            w.make("res", predictions_symlink),
            "--limit",
            1,
        ],
        r"predictions\.jsonl: not a regular file",
    ),
    Case(
        "eval-ceval-output-inside-model",
        "output-is-input",
        lambda w: ["eval", "ceval", "-m", w.model, "--data-dir", w.ceval, "-o", w.model / "results"],
        r"the output sits inside the input .*model",
    ),
    Case(
        "eval-ceval-output-is-data-dir",
        "output-is-input",
        lambda w: ["eval", "ceval", "-m", w.model, "--data-dir", w.ceval, "-o", w.ceval],
        r"the output is the input .*ceval",
    ),
    Case(
        "eval-ceval-output-is-lora",
        "output-is-input",
        lambda w: ["eval", "ceval", "-m", w.model, "--lora", w.lora, "--data-dir", w.ceval, "-o", w.lora],
        r"lora",
    ),
    Case(
        "eval-ceval-adapter-other-base",
        "mismatch",
        lambda w: [
            "eval",
            "ceval",
            "-m",
            w.model,
            "--lora",
            w.make("other", adapter_for_other_base),
            "--data-dir",
            w.ceval,
            "-o",
            w.out,
        ],
        r"other.*(shape|size|hidden)",
    ),
    # chat / serve (infer engineer)
    Case(
        "chat-adapter-other-base",
        "mismatch",
        lambda w: ["chat", "-m", w.model, "--lora", w.make("other", adapter_for_other_base), "-p", "你好"],
        r"other.*(shape|size|hidden)",
    ),
    Case(
        "chat-missing-model",
        "missing-input",
        lambda w: ["chat", "-m", w.inputs / "nomodel", "-p", "你好"],
        r"nomodel",
    ),
    Case(
        "chat-max-new-tokens-0",
        "option-range",
        lambda w: ["chat", "-m", w.model, "--max-new-tokens", 0, "-p", "你好"],
        r"--max-new-tokens",
    ),
    Case(
        "chat-temperature-negative",
        "option-range",
        lambda w: ["chat", "-m", w.model, "--temperature", -1, "-p", "你好"],
        r"--temperature",
    ),
    Case(
        "serve-port-out-of-range",
        "option-range",
        lambda w: ["serve", "-m", w.model, "--port", 70000],
        r"--port",
    ),
    Case(
        "serve-port-in-use",
        "option-range",
        lambda w: ["serve", "-m", w.model, "--port", busy_port(w)],
        r"--port .*(in use|already)",
    ),
    Case(
        "predict-output-is-input",
        "output-is-input",
        lambda w: ["predict", "-m", w.model, "-i", w.text, "-o", w.model / "p.jsonl"],
        r"--output .*model/p\.jsonl: the output sits inside the input .*model",
    ),
    Case(
        "predict-output-inside-lora",
        "output-is-input",
        lambda w: ["predict", "-m", w.model, "--lora", w.lora, "-i", w.text, "-o", w.lora / "p.jsonl"],
        r"lora",
    ),
    Case(
        "predict-output-is-input-file",
        "output-is-input",
        lambda w: [
            "predict",
            "-m",
            w.model,
            "-i",
            w.make("prompts", lambda w, p: p.write_text('{"prompt": "你好"}\n'), ".jsonl"),
            "-o",
            w.inputs / "prompts.jsonl",
        ],
        r"prompts\.jsonl",
    ),
    Case(
        "predict-non-utf8",
        "non-utf8",
        lambda w: ["predict", "-m", w.model, "-i", w.bad_text, "-o", w.outputs / "p.jsonl"],
        r"bad_text\.txt(:\d+)?: not UTF-8",
    ),
    # convert (ckpt)
    Case(
        "convert-output-is-input",
        "output-is-input",
        lambda w: ["convert", "-i", w.model, "-o", w.model, "--force"],
        r"output is the input",
    ),
    Case(
        "convert-unknown-layout",
        "option-range",
        lambda w: ["convert", "-i", w.model, "-o", w.out, "--to", "onnx"],
        r"onnx",
    ),
    Case(
        "convert-truncated-weights",
        "corrupt-file",
        lambda w: [
            "convert",
            "-i",
            w.make("trunc", truncated(lambda n: n - 1000)),
            "-o",
            w.out,
            "--from",
            "hf",
            "--to",
            "meta",
        ],
        r"trunc/model\.safetensors: not a valid safetensors file",
    ),
    # tiny-model (lead)
    Case(
        "tiny-model-output-is-tokenizer",
        "output-is-input",
        lambda w: ["tiny-model", "-t", w.tok, "-o", w.tok, "--force"],
        r"output is the input",
    ),
    Case(
        "tiny-model-hidden-size-0",
        "option-range",
        lambda w: ["tiny-model", "-t", w.tok, "-o", w.out, "--hidden-size", 0],
        r"--hidden-size",
    ),
    Case(
        "tiny-model-heads-not-dividing-hidden",
        "option-range",
        lambda w: ["tiny-model", "-t", w.tok, "-o", w.out, "--heads", 3],
        r"--heads",
    ),
    Case(
        "tiny-model-layers-negative",
        "option-range",
        lambda w: ["tiny-model", "-t", w.tok, "-o", w.out, "--layers", -1],
        r"--layers",
    ),
]

# ---- issue 24: every loading path validates what it reads (reliab) --------------------------------
TRUNC = r"trunc/model\.safetensors: not a valid safetensors file .*truncated"
OUTSIDE = r"index\.json: weight_map entry .* names '\.\./x\.safetensors', which resolves to .* outside the model folder"
PICKLE = r"pytorch_model\.bin: refused by torch\.load\(weights_only=True\): it asks for .*mkdir.*safetensors"
ADAPTER_PICKLE = r"evil/adapter_model\.bin: refused by torch\.load\(weights_only=True\)"


def _trunc(w):
    return w.make("trunc", truncated(lambda n: n - 1000))


def _bind(argv: Callable, model: Callable) -> Callable:
    return lambda w: argv(w, model(w))


def _model_loading_rows() -> list[Case]:
    """The same bad model through every command that reads one."""
    commands = {
        "chat": lambda w, m: ["chat", "-m", m, "-p", "你好"],
        "eval-ceval": lambda w, m: ["eval", "ceval", "-m", m, "--data-dir", w.ceval, "-o", w.out, "--limit", 1],
        "eval-ppl": lambda w, m: ["eval", "ppl", "-m", m, "-d", w.text],
        "predict": lambda w, m: ["predict", "-m", m, "-i", w.text, "-o", w.outputs / "p.jsonl"],
        "serve": lambda w, m: ["serve", "-m", m, "--port", 0],
        "pretrain": lambda w, m: ["pretrain", "-m", m, "-d", w.text, "-o", w.out, "--max-steps", 1],
        "sft": lambda w, m: ["sft", "-m", m, "-d", w.instructions, "-o", w.out, "--max-steps", 1],
        "quantize-4bit": lambda w, m: ["quantize", "4bit", "--model", m, "-o", w.out],
        "quantize-gguf": lambda w, m: ["quantize", "gguf", "--model", m, "-o", w.outputs / "m.gguf"],
        "merge": lambda w, m: ["merge", "--base", m, "--lora", w.lora, "-o", w.out],
        "convert": lambda w, m: ["convert", "-i", m, "-o", w.out, "--from", "hf", "--to", "meta"],
    }
    bad = {
        "truncated": (_trunc, TRUNC),
        "index-outside": (lambda w: w.make("idx", index_outside_folder), OUTSIDE),
        "shard-symlink-outside": (
            lambda w: w.make("lnk", shard_symlink_outside),
            r"lnk/model\.safetensors\.index\.json: weight_map entry .* names 'x\.safetensors', which resolves "
            r"\(through a symlink\) to .*/in/x\.safetensors outside the model folder",
        ),
        "pickle": (lambda w: w.make("evilbin", model_with_evil_bin), PICKLE),
    }
    rows = []
    for command, argv in commands.items():
        for what, (model, match) in bad.items():
            if command.startswith("quantize-gguf") and what == "truncated":
                continue  # quantize-gguf-truncated above
            rows.append(
                Case(
                    f"{command}-model-{what}",
                    "corrupt-file",
                    _bind(argv, model),
                    match,
                )
            )
    return rows


CASES += _model_loading_rows()
CASES += [
    Case(
        "chat-adapter-pickle",
        "corrupt-file",
        lambda w: ["chat", "-m", w.model, "--lora", w.make("evil", adapter_with_evil_bin), "-p", "你好"],
        ADAPTER_PICKLE,
    ),
    Case(
        "eval-ceval-adapter-pickle",
        "corrupt-file",
        lambda w: [
            "eval",
            "ceval",
            "-m",
            w.model,
            "--lora",
            w.make("evil", adapter_with_evil_bin),
            "--data-dir",
            w.ceval,
            "-o",
            w.out,
        ],
        ADAPTER_PICKLE,
    ),
    Case(
        "merge-adapter-pickle",
        "corrupt-file",
        lambda w: ["merge", "--base", w.model, "--lora", w.make("evil", adapter_with_evil_bin), "-o", w.out],
        ADAPTER_PICKLE,
    ),
    Case(
        "sft-adapter-pickle",
        "corrupt-file",
        lambda w: [
            "sft",
            "-m",
            w.model,
            "-d",
            w.instructions,
            "--adapter",
            w.make("evil", adapter_with_evil_bin),
            "-o",
            w.out,
            "--max-steps",
            1,
        ],
        ADAPTER_PICKLE,
    ),
    Case(
        "ppo-reward-model-pickle",
        "corrupt-file",
        lambda w: [
            "ppo",
            "-m",
            w.model,
            "-d",
            w.prefs,
            "--reward-model",
            w.make("evilbin", model_with_evil_bin),
            "-o",
            w.out,
            "--max-steps",
            1,
        ],
        PICKLE,
    ),
    Case(
        "chat-gguf-truncated",
        "corrupt-file",
        lambda w: ["chat", "-m", w.make("cut", truncated_gguf, ".gguf"), "-p", "你好"],
        r"cut\.gguf: not a valid GGUF file \(tensor 'token_embd\.weight' ends at byte \d+, past the end",
    ),
    Case(
        "chat-gguf-not-gguf",
        "corrupt-file",
        lambda w: ["chat", "-m", w.make("fake", lambda w, p: p.write_bytes(b"\0" * 64), ".gguf"), "-p", "你好"],
        r"fake\.gguf: not a valid GGUF file \(no GGUF magic",
    ),
    Case(
        "predict-output-hardlink-to-input",
        "output-is-input",
        lambda w: [
            "predict",
            "-m",
            w.model,
            "-i",
            w.make("prompts", lambda w, p: p.write_text('{"prompt": "你好"}\n'), ".jsonl"),
            "-o",
            w.make("hard", lambda w, p: os.link(w.inputs / "prompts.jsonl", p), ".jsonl"),
            "--restart",
        ],
        r"hard\.jsonl: the output is the input .*prompts\.jsonl",
    ),
    # resumable outputs validated on resume
    Case(
        "eval-ceval-predictions-corrupt",
        "corrupt-file",
        lambda w: [
            "eval",
            "ceval",
            "-m",
            w.model,
            "--data-dir",
            w.ceval,
            "-o",
            w.make("res", predictions_corrupt),
            "--limit",
            1,
        ],
        r"res/predictions\.jsonl:2: not valid JSON \(column \d+: .*not a zhllama predictions log",
    ),
    Case(
        "eval-ceval-predictions-foreign",
        "corrupt-file",
        lambda w: [
            "eval",
            "ceval",
            "-m",
            w.model,
            "--data-dir",
            w.ceval,
            "-o",
            w.make("res", predictions_foreign),
            "--limit",
            1,
        ],
        r"res/predictions\.jsonl:1: no 'subject'; not a zhllama predictions log",
    ),
    Case(
        "predict-output-corrupt",
        "corrupt-file",
        lambda w: ["predict", "-m", w.model, "-i", w.text, "-o", w.make("p", predict_output_corrupt, ".jsonl")],
        r"p\.jsonl:1: not valid JSON \(column 1: Expecting value\); not a zhllama predictions file",
    ),
    Case(
        "predict-output-foreign",
        "corrupt-file",
        lambda w: ["predict", "-m", w.model, "-i", w.text, "-o", w.make("p", predict_output_foreign, ".jsonl")],
        r"p\.jsonl:1: id 12345 is not in this input",
    ),
]
