"""Importance matrices through llama.cpp's own `llama-imatrix`, checked against the model before use.

The file is llama.cpp's: GGUF (`NAME.in_sum2` + `NAME.counts` tensors per weight, what
`llama-imatrix` writes by default) or the legacy `.dat` format; both are read here only to check
that every entry names a matrix of the model with its input width, so that an imatrix of another
model is refused in one line before anything is written (llama-quantize would otherwise skip
unknown names silently, or abort half-way on a size mismatch).

Which types llama.cpp refuses without an imatrix: `NEEDS_IMATRIX`, the file types whose tensors
get IQ1_S/IQ1_M/IQ2_XXS/IQ2_XS/IQ2_S/IQ3_XXS (or Q2_K in a Q2_K_S file), as
`tensor_requires_imatrix` in llama.cpp's src/llama-quant.cpp decides (IQ3_XS puts IQ3_XXS in every
attn_q/attn_k). tests/quantize/test_imatrix.py checks the table against llama.cpp itself.

Default calibration text: the Chinese and English corpora shipped in `zhllama/data`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from zhllama.core.errors import UserError

NEEDS_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "Q2_K_S")
DEFAULT_CALIBRATION = ("corpus_zh.txt", "corpus_en.txt")
MAX_CONTEXT = 512  # llama-imatrix's chunk length (its default), lowered for short texts
MIN_CONTEXT = 8


@dataclass
class Calibration:
    path: Path | None  # None: the shipped default
    text: str
    tokens: int
    context: int

    @property
    def name(self) -> str:
        return str(self.path) if self.path else "zhllama/data/" + "+".join(DEFAULT_CALIBRATION)


def default_text() -> str:
    from zhllama.core.assets import data_path

    return "\n".join(data_path(name).read_text(encoding="utf-8").strip() for name in DEFAULT_CALIBRATION) + "\n"


def check_calibration(path: Path | None, model_dir: Path) -> Calibration:
    """Read the calibration text (or the default) and choose the chunk length; one-line errors."""
    from zhllama.core.perplexity import read_text
    from zhllama.core.tokenizer import ZhTokenizer

    if path is None:
        text = default_text()
    else:
        try:
            text = read_text(path)
        except UserError as exc:
            raise UserError(f"--imatrix-data: {exc}") from exc
    tokens = len(ZhTokenizer(model_dir).encode(text, bos=True))
    context = min(MAX_CONTEXT, tokens // 2)  # llama-imatrix needs at least two chunks of text
    if context < MIN_CONTEXT:
        raise UserError(
            f"--imatrix-data: {path}: {tokens} tokens; an importance matrix needs at least {2 * MIN_CONTEXT}"
        )
    return Calibration(path, text, tokens, context)


def read_imatrix(path: Path) -> dict[str, int]:
    """Entry name -> number of values (input width, times experts) of a llama.cpp imatrix file."""
    if not path.is_file():
        raise UserError(f"--imatrix: {path}: no such file")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return _read_gguf_imatrix(path)
    return _read_legacy_imatrix(path)


def _read_gguf_imatrix(path: Path) -> dict[str, int]:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # damaged GGUF: ValueError, struct errors ...
        raise UserError(f"--imatrix: {path}: not a readable GGUF file ({exc})") from exc
    entries = {}
    for tensor in reader.tensors:
        if tensor.name.endswith(".in_sum2"):
            entries[tensor.name[: -len(".in_sum2")]] = int(tensor.n_elements)
    if not entries:
        raise UserError(f"--imatrix: {path}: a GGUF file without imatrix entries (no '*.in_sum2' tensors)")
    return entries


def _read_legacy_imatrix(path: Path) -> dict[str, int]:
    data = path.read_bytes()
    bad = UserError(f"--imatrix: {path}: neither a GGUF nor a legacy (.dat) llama.cpp imatrix file")
    try:
        (count,), offset, entries = struct.unpack_from("<i", data, 0), 4, {}
        if count < 1:
            raise bad
        for _ in range(count):
            (length,) = struct.unpack_from("<i", data, offset)
            if not 0 < length < 4096:
                raise bad
            name = data[offset + 4 : offset + 4 + length].decode("utf-8")
            offset += 4 + length
            _ncall, nval = struct.unpack_from("<ii", data, offset)
            offset += 8 + 4 * nval
            if nval < 1 or offset > len(data):
                raise bad
            entries[name] = nval
    except (struct.error, UnicodeDecodeError) as exc:
        raise bad from exc
    return entries


def model_matrices(model_dir: Path) -> dict[str, int]:
    """GGUF name -> input width of every 2-D weight of an HF folder (what an imatrix describes)."""
    from zhllama.core.checkpoint import names
    from zhllama.core.checkpoint.shards import plan_shards

    out = {}
    for key, shape in plan_shards(model_dir).items():
        name = names.to_format(key, "gguf")
        if name is not None and len(shape) == 2:
            out[name] = shape[1]
    return out


def check_imatrix(path: Path, model_dir: Path) -> dict[str, int]:
    """Refuse an imatrix whose entries are not this model's matrices (names and widths)."""
    entries = read_imatrix(path)
    matrices = model_matrices(model_dir)
    for name, size in entries.items():
        if name not in matrices:
            raise UserError(
                f"--imatrix: {path}: entry '{name}' is not a tensor of {model_dir} (an imatrix of another model?)"
            )
        if size != matrices[name]:
            raise UserError(
                f"--imatrix: {path}: entry '{name}' has {size} values, {model_dir}'s tensor has "
                f"{matrices[name]} inputs (an imatrix of another model?)"
            )
    return entries


def compute_imatrix(gguf_file: Path, calibration: Calibration, output: Path, threads: int | None = None) -> str:
    """Run llama-imatrix on `gguf_file` (F16) with the calibration text; writes `output` (GGUF imatrix)."""
    from zhllama.core.quantize.llamacpp_tools import repack_args, run_tool

    text_file = output.with_name(output.name + ".calibration.txt")
    text_file.write_text(calibration.text, encoding="utf-8")
    try:
        args = ["-m", str(gguf_file), "-f", str(text_file), "-o", str(output), "--output-format", "gguf"]
        args += ["-c", str(calibration.context), "-b", str(calibration.context), "--no-ppl", *repack_args()]
        return run_tool("llama-imatrix", args, "--imatrix-data", threads)
    finally:
        text_file.unlink(missing_ok=True)
