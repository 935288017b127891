"""`zhllama quantize METHOD`: 4bit, 8bit, gptq, gguf (or any plugin in `zhllama.quantizers`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.options import Force, examples
from zhllama.core import console, registry
from zhllama.core.atomic import atomic_dir, atomic_path, check_output_dir
from zhllama.core.errors import UserError
from zhllama.core.quantize.report import QuantizeReport, weights_size
from zhllama.plugins.quantizers.base import QuantizeOptions


def quantize(
    method: Annotated[str, typer.Argument(help="Quantization method: 4bit, 8bit, gptq, gguf (see `zhllama plugins`).")],
    model: Annotated[Path, typer.Option("--model", "-m", help="HF model folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (or .gguf file for gguf).")],
    gguf_type: Annotated[
        str, typer.Option("--type", help="gguf: F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_M, ...")
    ] = "Q8_0",
    quant_type: Annotated[str, typer.Option("--quant-type", help="4bit: nf4 or fp4.")] = "nf4",
    compute_dtype: Annotated[
        str, typer.Option("--compute-dtype", help="4bit: float32, bfloat16 or float16.")
    ] = "float32",
    double_quant: Annotated[
        bool, typer.Option("--double-quant/--no-double-quant", help="4bit: quantize the scales too.")
    ] = True,
    bits: Annotated[int, typer.Option("--bits", help="gptq: 4 or 8.")] = 4,
    group_size: Annotated[int, typer.Option("--group-size", help="gptq: group size.")] = 128,
    calibration: Annotated[
        Path | None, typer.Option("--calibration", help="gptq: calibration text, one sample per line.")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", help="gptq: number of calibration samples.")] = 128,
    eval_ppl: Annotated[
        Path | None, typer.Option("--eval-ppl", help="Text file: report perplexity before and after.")
    ] = None,
    ppl_context: Annotated[int, typer.Option("--ppl-context", help="Context length for --eval-ppl.")] = 512,
    force: Force = False,
) -> None:
    """Quantize a model with a plugin; prints and writes size (and PPL) before/after."""
    plugin = registry.load("quantizers", method)()
    if not (model / "config.json").is_file():
        raise UserError(f"{model}: not a model folder (no config.json)")
    options = QuantizeOptions(
        gguf_type, quant_type, compute_dtype, double_quant, bits, group_size, calibration, samples
    )
    start = time.perf_counter()
    if plugin.output_is_file:
        if output.is_dir():
            raise UserError(f"{output}: is a folder; gguf writes a single .gguf file")
        with atomic_path(output, force=force) as tmp:
            plugin.quantize(model, tmp, options)
        report_path = output.with_name(output.name + ".quantize_report.json")
    else:
        check_output_dir(output, force)
        with atomic_dir(output, force=force) as tmp:
            plugin.quantize(model, tmp, options)
        report_path = output / "quantize_report.json"
    report = QuantizeReport(
        method,
        str(model),
        str(output),
        plugin.settings(options),
        weights_size(model),
        weights_size(output),
        time.perf_counter() - start,
    )
    if eval_ppl is not None:
        from zhllama.core.perplexity import perplexity

        report.ppl_before = perplexity(model, eval_ppl, context=ppl_context).perplexity
        report.ppl_after = perplexity(output, eval_ppl, context=ppl_context, tokenizer=model).perplexity
        report.ppl_data = str(eval_ppl)
    report.write(report_path)
    console.emit(report.as_dict(), console.table(f"quantize {method}", ["", "value"], report.rows()))


def register(app: typer.Typer) -> None:
    app.command(
        "quantize",
        epilog=examples(
            "zhllama quantize gguf --model merged --type Q4_0 --output model-q4_0.gguf --eval-ppl zh.txt",
            "zhllama quantize 4bit --model merged --output merged-nf4",
            "zhllama quantize gptq --model merged --bits 4 --calibration zh.txt --samples 128 --output merged-gptq",
        ),
    )(quantize)
