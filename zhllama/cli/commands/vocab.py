"""`zhllama vocab train|merge|stats`: the Chinese vocabulary and how much shorter it makes text (SentencePiece and byte-level BPE)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.options import Force, examples
from zhllama.core import bpe, console, vocab
from zhllama.core.errors import UserError

app = typer.Typer(
    help="Train a Chinese vocabulary (SentencePiece or byte-level BPE), merge it into a base tokenizer, compare lengths.",
    no_args_is_help=True,
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
        "zhllama vocab train --kind byte-bpe --base smollm2_dir --input zh_corpus.txt --vocab-size 8000 "
        "--output zh_bpe.json",
        "zhllama vocab train --kind byte-bpe --special-tokens llama3 --input zh_corpus.txt --vocab-size 8000 "
        "--output llama3_style_tokenizer",
    ),
)
def train_cmd(
    input: Annotated[list[Path], typer.Option("--input", "-i", help="Text file(s), one sentence/paragraph per line.")],
    vocab_size: Annotated[
        int, typer.Option("--vocab-size", help="Number of pieces (byte-bpe: tokens, 256 bytes included).")
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="The .model file (byte-bpe: a .json tokenizer file, or a tokenizer folder)."
        ),
    ],
    kind: Annotated[
        str, typer.Option("--kind", help="sentencepiece (LLaMA-1/2) or byte-bpe (Llama-3, Qwen, SmolLM2).")
    ] = "sentencepiece",
    base: Annotated[
        Path | None,
        typer.Option("--base", help="byte-bpe: take the normalizer and pre-tokenizer of this tokenizer.json/folder."),
    ] = None,
    min_frequency: Annotated[int, typer.Option("--min-frequency", help="byte-bpe: a merge must occur this often.")] = 2,
    max_token_length: Annotated[
        int, typer.Option("--max-token-length", help="byte-bpe: longest token in bytes (0: no limit).")
    ] = 24,
    special_tokens: Annotated[
        str,
        typer.Option(
            "--special-tokens", help="byte-bpe folder output: none, llama3 or chatml special tokens after the vocab."
        ),
    ] = "none",
    model_type: Annotated[str | None, typer.Option("--model-type", help="sentencepiece: unigram or bpe.")] = None,
    character_coverage: Annotated[
        float | None, typer.Option("--character-coverage", help="sentencepiece: share of characters covered.")
    ] = None,
    byte_fallback: Annotated[
        bool | None, typer.Option("--byte-fallback/--no-byte-fallback", help="sentencepiece: add <0xNN> byte pieces.")
    ] = None,
    split_digits: Annotated[
        bool | None,
        typer.Option("--split-digits/--no-split-digits", help="sentencepiece: one piece per digit, as LLaMA."),
    ] = None,
    force: Force = False,
) -> None:
    """Train a SentencePiece model (sentencepiece's trainer) or a byte-level BPE (tokenizers' trainer)."""
    if kind not in ("sentencepiece", "byte-bpe"):
        raise UserError(f"--kind: '{kind}' is not one of sentencepiece, byte-bpe")
    sp_options = {
        "--model-type": model_type,
        "--character-coverage": character_coverage,
        "--byte-fallback": byte_fallback,
        "--split-digits": split_digits,
    }
    if kind == "byte-bpe":
        given = [flag for flag, value in sp_options.items() if value is not None]
        if given:
            raise UserError(f"{given[0]}: a sentencepiece option; --kind byte-bpe does not take it")
        console.log(f"training a byte-level BPE vocabulary of {vocab_size} tokens ...")
        result = bpe.train(
            input,
            vocab_size,
            output,
            base=base,
            min_frequency=min_frequency,
            max_token_length=max_token_length or None,
            special_tokens=special_tokens,
            force=force,
        )
        rows = [(result.output, result.pieces, result.seconds, result.mb_per_second)]
        console.emit(result.__dict__, console.table("vocab train", ["output", "tokens", "seconds", "MB/s"], rows))
        return
    if base is not None:
        raise UserError("--base: only for --kind byte-bpe")
    model_type = model_type or "bpe"
    console.log(f"training a {model_type} SentencePiece model with {vocab_size} pieces ...")
    result = vocab.train(
        input,
        vocab_size,
        output,
        model_type=model_type,
        character_coverage=0.9995 if character_coverage is None else character_coverage,
        byte_fallback=bool(byte_fallback),
        split_digits=True if split_digits is None else split_digits,
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
        "zhllama vocab merge --base smollm2_dir --add zh_bpe.json --pad-to-multiple-of 64 --output smollm2_zh_tok",
    ),
)
def merge_cmd(
    base: Annotated[
        Path,
        typer.Option(
            "--base",
            help="LLaMA tokenizer (folder with tokenizer.model, or the .model) or a byte-level BPE tokenizer "
            "(folder with tokenizer.json, or the file).",
        ),
    ],
    add: Annotated[
        list[Path],
        typer.Option(
            "--add",
            help="Vocabularies whose new tokens are appended, in order: SentencePiece .model; for byte-level "
            "bases also tokenizer.json and word lists (one word a line).",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output tokenizer folder.")],
    pad_token: Annotated[
        str | None,
        typer.Option("--pad-token", help="SentencePiece: append this piece right after the base pieces as pad."),
    ] = None,
    reference_scores: Annotated[
        bool,
        typer.Option("--reference-scores", help="SentencePiece: new pieces get score 0, exactly as the reference."),
    ] = False,
    pad_to_multiple_of: Annotated[
        int | None,
        typer.Option(
            "--pad-to-multiple-of", help="Byte-level: reserved special tokens up to a multiple of N ids (GPUs like 64)."
        ),
    ] = None,
    force: Force = False,
) -> None:
    """Merge new tokens into a base tokenizer; base ids stay identical."""
    report = vocab.merge_any(
        base,
        add,
        output,
        pad_token=pad_token,
        reference_scores=reference_scores,
        pad_to_multiple_of=pad_to_multiple_of,
        force=force,
    )
    if isinstance(report, bpe.BpeMergeReport):
        rows = [
            ("base tokens", report.base_size),
            ("added", report.added),
            ("added intermediate", report.intermediate),
            ("skipped duplicates", report.skipped_duplicates),
            ("skipped ASCII", report.skipped_ascii),
            ("skipped unreachable", report.skipped_unreachable),
            ("padding", report.padding),
            ("new vocab size", report.final_size),
            ("llama.cpp pre-tokenizer", report.llama_cpp_pre or "-"),
        ]
        if report.llama_cpp_pre is None:
            console.warn(f"{report.base}: llama.cpp does not know this pre-tokenizer; GGUF export will refuse it")
        console.emit(report.as_dict(), console.table(f"vocab merge -> {output}", ["", "value"], rows))
        return
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
        list[Path],
        typer.Option(
            "--tokenizer", "-t", help="Tokenizer folder, .model or tokenizer.json; the first is the baseline."
        ),
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
            ["tokenizer", "vocab", "tokens", "tokens/char", "relative", "byte/part-char"],
            rows,
        ),
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="vocab")
