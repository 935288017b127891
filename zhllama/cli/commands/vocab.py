"""`zhllama vocab train|merge|stats`: the Chinese vocabulary and how much shorter it makes text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.options import Force, examples
from zhllama.core import console, vocab

app = typer.Typer(
    help="Train a Chinese SentencePiece model, merge it into a LLaMA tokenizer, compare lengths.", no_args_is_help=True
)

TIES_WARNING = (
    "{name}: merged pieces tie in score; sentencepiece breaks ties by position, which tokenizer.json cannot "
    "express, so plain AutoTokenizer users will see different ids on some text (zhllama's own commands "
    "encode with sentencepiece and are exact)"
)


@app.command(
    "train",
    epilog=examples(
        "zhllama vocab train --input zh_corpus.txt --vocab-size 20000 --output chinese_sp.model",
        "zhllama vocab train --input a.txt --input b.txt --vocab-size 8000 --model-type unigram --output zh.model",
    ),
)
def train_cmd(
    input: Annotated[list[Path], typer.Option("--input", "-i", help="Text file(s), one sentence/paragraph per line.")],
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="Number of pieces.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .model file.")],
    model_type: Annotated[str, typer.Option("--model-type", help="unigram or bpe.")] = "bpe",
    character_coverage: Annotated[
        float, typer.Option("--character-coverage", help="Share of characters covered.")
    ] = 0.9995,
    byte_fallback: Annotated[
        bool, typer.Option("--byte-fallback/--no-byte-fallback", help="Add <0xNN> byte pieces.")
    ] = False,
    split_digits: Annotated[
        bool, typer.Option("--split-digits/--no-split-digits", help="One piece per digit, as LLaMA.")
    ] = True,
    force: Force = False,
) -> None:
    """Train a SentencePiece model (wraps sentencepiece's trainer)."""
    console.log(f"training a {model_type} SentencePiece model with {vocab_size} pieces ...")
    result = vocab.train(
        input,
        vocab_size,
        output,
        model_type=model_type,
        character_coverage=character_coverage,
        byte_fallback=byte_fallback,
        split_digits=split_digits,
        force=force,
    )
    console.emit(
        result.__dict__,
        console.table("vocab train", ["output", "pieces", "seconds"], [(result.output, result.pieces, result.seconds)]),
    )


@app.command(
    "merge",
    epilog=examples(
        "zhllama vocab merge --base llama/tokenizer.model --add chinese_sp.model --output merged_tokenizer",
        "zhllama vocab merge --base llama_dir --add chinese_sp.model --pad-token '<pad>' --output zh_tokenizer",
    ),
)
def merge_cmd(
    base: Annotated[
        Path, typer.Option("--base", help="LLaMA tokenizer: a folder with tokenizer.model, or the .model file.")
    ],
    add: Annotated[
        list[Path], typer.Option("--add", help="SentencePiece model(s) whose new pieces are appended, in order.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output tokenizer folder.")],
    pad_token: Annotated[
        str | None, typer.Option("--pad-token", help="Append this piece right after the base pieces as the pad token.")
    ] = None,
    reference_scores: Annotated[
        bool, typer.Option("--reference-scores", help="Give new pieces score 0, exactly as the reference script.")
    ] = False,
    force: Force = False,
) -> None:
    """Merge Chinese pieces into a LLaMA tokenizer; base ids stay identical."""
    report = vocab.merge(base, add, output, pad_token=pad_token, reference_scores=reference_scores, force=force)
    if report.score_ties:
        console.warn(TIES_WARNING.format(name=output))
    rows = [
        ("base pieces", report.base_size),
        ("added", report.added),
        ("skipped duplicates", report.skipped_duplicates),
        ("final size", report.final_size),
        ("pad id", "-" if report.pad_id is None else report.pad_id),
        ("AutoTokenizer == sentencepiece", "yes" if report.hf_matches_sentencepiece else "no"),
    ]
    console.emit(report.as_dict(), console.table(f"vocab merge -> {output}", ["", "value"], rows))


@app.command(
    "stats",
    epilog=examples(
        "zhllama vocab stats --tokenizer llama/tokenizer.model --tokenizer merged_tokenizer --text zh_corpus.txt",
    ),
)
def stats_cmd(
    tokenizer: Annotated[
        list[Path], typer.Option("--tokenizer", "-t", help="Tokenizer folder or .model; the first is the baseline.")
    ],
    text: Annotated[Path, typer.Option("--text", help="UTF-8 text file to encode line by line.")],
) -> None:
    """Tokens per character of each tokenizer on a text, relative to the first."""
    results = vocab.stats(tokenizer, text)
    for r in results:
        if r.score_ties:
            console.warn(TIES_WARNING.format(name=r.tokenizer))
    rows = [
        (
            r.tokenizer,
            r.vocab_size,
            r.tokens,
            r.tokens_per_char,
            f"{r.relative_length:.1%}",
            f"{r.byte_fallback_rate:.2%}",
        )
        for r in results
    ]
    console.emit(
        {"text": str(text), "characters": results[0].characters, "tokenizers": [r.as_dict() for r in results]},
        console.table(
            f"vocab stats on {text} ({results[0].characters:,} characters)",
            ["tokenizer", "vocab", "tokens", "tokens/char", "relative", "byte fallback"],
            rows,
        ),
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="vocab")
