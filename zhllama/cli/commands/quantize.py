"""`zhllama quantize METHOD`: one subcommand per quantizer plugin (4bit, 8bit, gptq, gguf, or any other).

Each subcommand's method flags are generated from the plugin's `Options` dataclass, so a flag of
another method (`quantize gguf --bits 4`) is a usage error rather than silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.options import Force, examples
from zhllama.cli.schema import with_options
from zhllama.core import console, registry
from zhllama.core.errors import UserError

EXAMPLES = {
    "gguf": ("zhllama quantize gguf --model merged --type Q4_0 --output model-q4_0.gguf --eval-ppl zh.txt",),
    "4bit": ("zhllama quantize 4bit --model merged --output merged-nf4",),
    "8bit": ("zhllama quantize 8bit --model merged --output merged-int8",),
    "gptq": ("zhllama quantize gptq --model merged --bits 4 --calibration zh.txt --samples 128 --output merged-gptq",),
    "awq": ("zhllama quantize awq --model merged --calibration zh.txt --output merged-awq --eval-ppl zh.txt",),
}
EXAMPLES["gguf"] += (
    "zhllama quantize gguf --model merged --type IQ4_XS --imatrix-data builtin --imatrix-output merged.imatrix.gguf "
    "--output model-iq4_xs.gguf",
    "zhllama quantize gguf --model merged --type Q4_K_M --imatrix merged.imatrix.gguf --output model-q4_k_m.gguf",
)

app = typer.Typer(
    help="Quantize a model with a plugin; prints and writes size (and PPL) before/after.", no_args_is_help=True
)


def method_command(method: str, options_class: type):
    """The `zhllama quantize METHOD` command: common flags plus the plugin's own."""

    def command(
        model: Annotated[
            str,
            typer.Option("--model", "-m", help="HF folder, hub id or Meta/TencentPretrain folder.", show_default=False),
        ],
        output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (a file for single-file formats).")],
        eval_ppl: Annotated[
            Path | None, typer.Option("--eval-ppl", help="Text file: report perplexity before and after.")
        ] = None,
        ppl_context: Annotated[int, typer.Option("--ppl-context", help="Context length for --eval-ppl.")] = 512,
        force: Force = False,
        options=None,
    ) -> None:
        from zhllama.core.quantize.orchestrate import quantize

        report = quantize(method, model, output, options, eval_ppl, ppl_context, force)
        console.emit(report.as_dict(), console.table(f"quantize {method}", ["", "value"], report.rows()))

    return with_options(options_class, "options")(command)


def compare_command(
    model: Annotated[str, typer.Option("--model", "-m", help="HF folder, hub id or Meta/TencentPretrain folder.")],
    types: Annotated[
        str,
        typer.Option("--types", help="Comma-separated GGUF types; TYPE+imatrix quantizes with an importance matrix."),
    ],
    data: Annotated[Path, typer.Option("--data", help="Text file scored by every type (same token ids).")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for compare.json, compare.png (and --keep-files GGUFs).")
    ],
    base: Annotated[
        str, typer.Option("--base", help="Reference the KL-divergence is measured to: F16, F32 or BF16.")
    ] = "F16",
    context: Annotated[int, typer.Option("--context", help="Window length (disjoint windows).")] = 512,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="Score only the first N tokens of --data.")
    ] = None,
    imatrix: Annotated[
        Path | None, typer.Option("--imatrix", help="Importance matrix for the +imatrix types (llama.cpp's file).")
    ] = None,
    imatrix_data: Annotated[
        Path | None,
        typer.Option(
            "--imatrix-data", help="Calibration text for the +imatrix types (default: the shipped zh+en text)."
        ),
    ] = None,
    keep_files: Annotated[bool, typer.Option("--keep-files", help="Keep the GGUF files in --output.")] = False,
    force: Force = False,
) -> None:
    """Size, PPL, KL-divergence and top-1 agreement of GGUF types against the unquantized model (llama.cpp)."""
    from zhllama.core.quantize import compare
    from zhllama.core.quantize.orchestrate import compare_types

    result = compare_types(
        model, types, data, output, base, context, max_tokens, imatrix, imatrix_data, keep_files, force
    )
    summary = (
        f"{result.tokens_scored} tokens of {data} (context {context}) through {result.backend}; "
        f"KL-divergence and top-1 agreement against {result.base}; plot: {output / 'compare.png'}"
    )
    console.emit(
        result.as_dict(),
        console.table("quantize compare", compare.COLUMNS, compare.table_rows(result)),
        summary,
    )


def broken_command(error: UserError):
    """The command of a plugin that cannot be loaded: says why when used (the CLI still builds)."""

    def command() -> None:
        raise error

    return command


def register(root: typer.Typer) -> None:
    for name in registry.names("quantizers"):
        try:
            plugin = registry.load("quantizers", name, check_requirements=False)
        except UserError as exc:  # a broken third-party plugin must not break every command
            app.command(name, help=f"(cannot be loaded: {exc})")(broken_command(exc))
            continue
        command = method_command(name, plugin.Options)
        epilog = examples(*EXAMPLES.get(name, (f"zhllama quantize {name} --model merged --output out",)))
        app.command(name, help=plugin.description, epilog=epilog)(command)
    app.command(
        "compare",
        help="Size, PPL, KL-divergence and top-1 agreement of GGUF types vs the unquantized model, one table + plot.",
        epilog=examples(
            "zhllama quantize compare --model merged --types Q8_0,Q4_K_M,Q4_K_M+imatrix,IQ4_XS+imatrix "
            "--data zh.txt --output cmp"
        ),
    )(compare_command)
    root.add_typer(app, name="quantize")
