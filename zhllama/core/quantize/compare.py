"""`zhllama quantize compare`: what each GGUF type costs, measured against the unquantized model.

Every row is a GGUF file scored through one backend, llama.cpp (llama-cpp-python's logits), on the
same token ids (the base file's tokenization of `--data`): size (file bytes; bits per weight =
tensor bytes * 8 / weights, as llama.cpp counts it), perplexity, and against the base model (F16 by
default, as llama.cpp's `perplexity --kl-divergence` is used) the mean KL-divergence
KL(base || quantized) of the next-token distributions and the top-1 agreement (share of positions
where both models' most likely next token is the same).

Windows are `core.perplexity.windows` with stride == context (disjoint; the first token of each
window is context only), the same positions `zhllama eval ppl --backend llamacpp` scores. The base
and one quantized model are loaded at a time and decode each window side by side, so the base's
logits are never stored (memory: two models and two windows of logits).

Types: the names of `quantize gguf --type`; `TYPE+imatrix` quantizes with an importance matrix
(`--imatrix FILE`, else computed by llama-imatrix from `--imatrix-data`, default the shipped
Chinese + English text). Types without the suffix use none, so `Q4_K_M,Q4_K_M+imatrix` compares both.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zhllama.core.errors import UserError

IMATRIX_SUFFIX = "+IMATRIX"
BASE_TYPES = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class Variant:
    type: str
    imatrix: bool = False

    @property
    def label(self) -> str:
        return self.type + ("+imatrix" if self.imatrix else "")

    @property
    def filename(self) -> str:
        return f"model-{self.type}{'-imatrix' if self.imatrix else ''}.gguf"


@dataclass
class Row:
    type: str
    imatrix: bool
    file_bytes: int
    tensor_bytes: int
    weights: int
    bits_per_weight: float
    ppl: float
    nll: float
    mean_kld: float
    max_kld: float
    top1_agreement: float
    seconds: float


@dataclass
class Comparison:
    model: str
    data: str
    base: str
    context: int
    tokens: int
    tokens_scored: int
    backend: str = "llama.cpp (llama-cpp-python logits)"
    imatrix: dict = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def parse_types(spec: str) -> list[Variant]:
    """'Q8_0,Q4_K_M,Q4_K_M+imatrix' -> variants; unknown names and imatrix-only types refused."""
    from zhllama.core.quantize.gguf_types import ALL_TYPES
    from zhllama.core.quantize.imatrix import NEEDS_IMATRIX

    out: list[Variant] = []
    for raw in spec.split(","):
        item = raw.strip().upper()
        if not item:
            continue
        imatrix = item.endswith(IMATRIX_SUFFIX)
        name = item[: -len(IMATRIX_SUFFIX)] if imatrix else item
        if name not in ALL_TYPES:
            raise UserError(f"--types: '{raw.strip()}' is not one of {', '.join(ALL_TYPES)} (optionally +imatrix)")
        if imatrix and name in BASE_TYPES:
            raise UserError(f"--types: '{raw.strip()}': an importance matrix is not used by unquantized {name}")
        if name in NEEDS_IMATRIX and not imatrix:
            raise UserError(f"--types: llama.cpp needs an importance matrix for {name}; write {name}+imatrix")
        variant = Variant(name, imatrix)
        if variant in out:
            raise UserError(f"--types: '{variant.label}' is listed twice")
        out.append(variant)
    if not out:
        raise UserError("--types: no type given (e.g. Q8_0,Q4_K_M,Q4_K_M+imatrix,IQ4_XS+imatrix)")
    return out


def tensor_stats(path: Path) -> tuple[int, int]:
    """(bytes of tensor data, number of weights) of a GGUF file, as llama.cpp's BPW counts them."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return sum(int(t.n_bytes) for t in reader.tensors), sum(int(t.n_elements) for t in reader.tensors)


def _log_softmax(rows):
    import numpy as np

    rows = rows.astype(np.float32, copy=False)
    top = rows.max(axis=1, keepdims=True)
    shifted = rows - top
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True, dtype=np.float32))


def score_against(base_llm, other_llm, ids: list[int], context: int, advance=None) -> dict:
    """NLL, KL(base || other) and top-1 agreement over the windows, both models side by side."""
    import llama_cpp
    import numpy as np

    from zhllama.core.perplexity import gguf_window_logits

    n_vocab = base_llm.n_vocab()
    if other_llm.n_vocab() != n_vocab:
        raise UserError(f"vocabularies differ ({n_vocab} vs {other_llm.n_vocab()} tokens)")
    base_windows = gguf_window_logits(llama_cpp, base_llm.ctx, n_vocab, ids, context, context)
    other_windows = gguf_window_logits(llama_cpp, other_llm.ctx, n_vocab, ids, context, context)
    nll = kld = 0.0
    max_kld, same, count = 0.0, 0, 0
    for (targets, base_rows), (_, other_rows) in zip(base_windows, other_windows, strict=True):
        n = len(targets)
        if n == 0:
            continue
        log_p = _log_softmax(base_rows)
        log_q = _log_softmax(other_rows)
        per_token = (np.exp(log_p) * (log_p - log_q)).sum(axis=1, dtype=np.float64)
        kld += float(per_token.sum())
        max_kld = max(max_kld, float(per_token.max()))
        nll -= float(log_q[np.arange(n), targets].sum(dtype=np.float64))
        same += int((base_rows.argmax(axis=1) == other_rows.argmax(axis=1)).sum())
        count += n
        if advance is not None:
            advance(n)
    return {"nll": nll, "kld": kld, "max_kld": max_kld, "same": same, "count": count}


def check_inputs(
    model: Path, data: Path, variants: list[Variant], base: str, context: int, imatrix, imatrix_data
) -> object:
    """Every check before the output is created; returns the calibration (None when not needed)."""
    from zhllama.core.perplexity import check_window, read_text
    from zhllama.core.quantize import imatrix as im
    from zhllama.core.quantize.gguf_export import check_model

    if base not in BASE_TYPES:
        raise UserError(f"--base: '{base}' is not one of {', '.join(BASE_TYPES)}")
    check_window(context, None)
    read_text(data)
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        raise UserError("quantize compare scores through llama.cpp; install it with: pip install 'zhllama[llamacpp]'")
    check_model(model)
    needs = any(v.imatrix for v in variants)
    if imatrix is not None and imatrix_data is not None:
        raise UserError("--imatrix and --imatrix-data: give one (a ready imatrix, or text to compute one)")
    if not needs:
        if imatrix is not None or imatrix_data is not None:
            raise UserError("--imatrix/--imatrix-data: no type in --types uses it (write e.g. Q4_K_M+imatrix)")
        return None
    from zhllama.core.quantize.llamacpp_tools import find_tool

    calibration = None
    if imatrix is not None:
        im.check_imatrix(imatrix, model)
    else:
        calibration = im.check_calibration(None if str(imatrix_data) == "builtin" else imatrix_data, model)
        find_tool("llama-imatrix", "--types ...+imatrix")
    find_tool("llama-quantize", "--types ...+imatrix")
    return calibration


def compare(
    model: Path,
    data: Path,
    variants: list[Variant],
    workdir: Path,
    base: str = "F16",
    context: int = 512,
    max_tokens: int | None = None,
    imatrix: Path | None = None,
    calibration=None,
    progress: bool = True,
) -> Comparison:
    """Write every variant into `workdir` and score it against the base (see the module docstring)."""
    from zhllama.core import console
    from zhllama.core.loading.llamacpp import new_llama
    from zhllama.core.perplexity import read_text, windows
    from zhllama.core.quantize.gguf_export import write_gguf
    from zhllama.core.quantize.gguf_quantize import quantize_f16
    from zhllama.core.quantize.gguf_types import TYPES
    from zhllama.core.quantize.imatrix import compute_imatrix, read_imatrix

    workdir.mkdir(parents=True, exist_ok=True)
    base_file = workdir / Variant(base).filename
    with console.progress_task(f"writing GGUF {base}", None) as advance:
        write_gguf(model, base_file, base, progress=advance)
    f16 = base_file if base == "F16" else workdir / Variant("F16").filename
    if f16 != base_file and any(v.type not in TYPES or v.imatrix for v in variants):
        write_gguf(model, f16, "F16")
    imatrix_info: dict = {}
    if any(v.imatrix for v in variants):
        if imatrix is None:
            imatrix = workdir / "imatrix.gguf"
            with console.progress_task(f"llama.cpp: importance matrix ({calibration.tokens} tokens)", None):
                compute_imatrix(f16, calibration, imatrix)
            imatrix_info = {"data": calibration.name, "tokens": calibration.tokens, "context": calibration.context}
        imatrix_info |= {"file": str(imatrix), "entries": len(read_imatrix(imatrix))}
    files: dict[Variant, Path] = {Variant(base): base_file}
    for variant in variants:
        target = workdir / variant.filename
        if variant in files or target.exists():
            files[variant] = target
            continue
        with console.progress_task(f"quantizing {variant.label}", None):
            if variant.type in TYPES and not variant.imatrix:
                write_gguf(model, target, variant.type)
            else:
                quantize_f16(f16, target, variant.type, imatrix if variant.imatrix else None)
        files[variant] = target

    text = read_text(data)
    base_llm = new_llama(str(base_file), n_ctx=context, n_batch=context, n_ubatch=min(context, 512), verbose=False)
    try:
        ids = base_llm.tokenize(text.encode("utf-8"), add_bos=True)
        if max_tokens is not None:
            ids = ids[:max_tokens]
        if len(ids) < 2:
            raise UserError(f"{data}: text has fewer than 2 tokens; nothing to score")
        scored = sum(min(new, end - begin - 1) for begin, end, new in windows(len(ids), context, context))
        result = Comparison(str(model), str(data), base, context, len(ids), scored, imatrix=imatrix_info)
        order = [Variant(base)] + [v for v in variants if v != Variant(base)]
        for variant in order:
            path = files[variant]
            start = time.perf_counter()
            other = new_llama(str(path), n_ctx=context, n_batch=context, n_ubatch=min(context, 512), verbose=False)
            try:
                with console.progress_task(f"scoring {variant.label}", scored if progress else None) as advance:
                    stats = score_against(base_llm, other, ids, context, advance)
            finally:
                other.close()
            tensor_bytes, weights = tensor_stats(path)
            count = stats["count"]
            result.rows.append(
                Row(
                    variant.type,
                    variant.imatrix,
                    path.stat().st_size,
                    tensor_bytes,
                    weights,
                    tensor_bytes * 8 / weights,
                    math.exp(stats["nll"] / count),
                    stats["nll"],
                    stats["kld"] / count,
                    stats["max_kld"],
                    stats["same"] / count,
                    time.perf_counter() - start,
                )
            )
    finally:
        base_llm.close()
    return result


def table_rows(result: Comparison) -> list[tuple]:
    base_ppl = result.rows[0].ppl
    return [
        (
            row.type + (" +imatrix" if row.imatrix else ""),
            f"{row.file_bytes / 2**20:,.2f}",
            f"{row.bits_per_weight:.2f}",
            f"{row.ppl:.3f}",
            f"{100 * (row.ppl / base_ppl - 1):+.2f}%",
            f"{row.mean_kld:.5f}",
            f"{100 * row.top1_agreement:.2f}%",
        )
        for row in result.rows
    ]


COLUMNS = ["type", "MiB", "bits/weight", "PPL", "ΔPPL", "mean KLD", "top-1 agree"]


def plot(result: Comparison, path: Path) -> None:
    """One PNG: mean KL-divergence and PPL against bits per weight, one labelled point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_kld, ax_ppl) = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in result.rows:
        label = row.type + ("+imatrix" if row.imatrix else "")
        marker = "s" if row.imatrix else "o"
        if row.mean_kld > 0:
            ax_kld.scatter(row.bits_per_weight, row.mean_kld, marker=marker)
            ax_kld.annotate(
                label, (row.bits_per_weight, row.mean_kld), fontsize=8, xytext=(3, 3), textcoords="offset points"
            )
        ax_ppl.scatter(row.bits_per_weight, row.ppl, marker=marker)
        ax_ppl.annotate(label, (row.bits_per_weight, row.ppl), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax_kld.set_yscale("log")
    ax_kld.set_xlabel("bits per weight")
    ax_kld.set_ylabel(f"mean KL-divergence to {result.base}")
    ax_ppl.set_xlabel("bits per weight")
    ax_ppl.set_ylabel("perplexity")
    for ax in (ax_kld, ax_ppl):
        ax.grid(True, alpha=0.3)
    name = Path(result.model).name
    fig.suptitle(
        f"{name}: {result.tokens_scored} tokens of {Path(result.data).name}, context {result.context}, llama.cpp"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: Comparison, folder: Path) -> None:
    (folder / "compare.json").write_text(json.dumps(result.as_dict(), ensure_ascii=False, indent=2) + "\n")
    plot(result, folder / "compare.png")
