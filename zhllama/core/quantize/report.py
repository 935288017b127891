"""What every quantization method reports: size before/after, ratio, and optional perplexity."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pth")


def weights_size(path: Path) -> int:
    """Bytes of model weights in a folder (or of a single file such as a .gguf)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)


@dataclass
class QuantizeReport:
    method: str
    model: str
    output: str
    settings: dict
    bytes_before: int
    bytes_after: int
    seconds: float
    ppl_before: float | None = None
    ppl_after: float | None = None
    ppl_data: str | None = None
    ppl_backend: str | None = None  # both PPLs are measured through this one backend

    @property
    def ratio(self) -> float:
        return self.bytes_after / self.bytes_before if self.bytes_before else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), ensure_ascii=False, indent=2) + "\n")

    def rows(self) -> list[tuple[str, object]]:
        rows: list[tuple[str, object]] = [
            ("method", self.method),
            *((k, v) for k, v in self.settings.items() if v is not None),
            ("size before", f"{self.bytes_before / 2**20:,.2f} MiB"),
            ("size after", f"{self.bytes_after / 2**20:,.2f} MiB"),
            ("ratio", f"{self.ratio:.3f}"),
        ]
        if self.ppl_before is not None:
            rows += [
                ("PPL before", f"{self.ppl_before:.4f}"),
                ("PPL after", f"{self.ppl_after:.4f}"),
                ("PPL backend", f"{self.ppl_backend} (before and after)"),
            ]
        rows += [("output", self.output), ("seconds", f"{self.seconds:.1f}")]
        return rows


def check_ppl_data(data: Path, context: int) -> None:
    """`--eval-ppl` / `--ppl-context` checked before anything is written."""
    from zhllama.core.perplexity import check_window, read_text

    check_window(context, None)
    read_text(data)


def measure_ppl(report: QuantizeReport, model: Path, output: Path, data: Path, context: int) -> None:
    """PPL before and after through the same backend, so the difference is the quantization's.

    transformers reads both sides: the source folder, and the result (a bnb/GPTQ folder, or a
    .gguf dequantized by transformers and tokenized with the source model's tokenizer). Mixing
    backends (transformers before, llama.cpp after) adds the backends' own difference (~0.5 PPL on
    an F16 conversion) to the figure.
    """
    from zhllama.core.perplexity import perplexity

    before = perplexity(model, data, context=context, backend="transformers")
    after = perplexity(output, data, context=context, tokenizer=model, backend="transformers")
    report.ppl_before, report.ppl_after = before.perplexity, after.perplexity
    report.ppl_data, report.ppl_backend = str(data), "transformers"
