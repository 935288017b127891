"""`zhllama chat`: a streaming REPL, or one-shot answers for scripts (`--prompt`, piped stdin).

The model/generation flags are declared here once and reused by `zhllama serve`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from zhllama.cli.options import examples
from zhllama.core import console
from zhllama.core.engine import GenerationParams, LoadOptions
from zhllama.core.generation.history import ChatHistory
from zhllama.core.generation.runtime import ChatRuntime, load_runtime
from zhllama.core.templates import Message

Model = Annotated[Path, typer.Option("--model", "-m", help="HF model folder or .gguf file.", show_default=False)]
Lora = Annotated[list[Path], typer.Option("--lora", help="LoRA adapter folder(s), applied in order.")]
Load = Annotated[str | None, typer.Option("--load", help="Quantize on load: 4bit or 8bit (bitsandbytes).")]
Engine = Annotated[
    str | None, typer.Option("--engine", help="transformers, llamacpp or vllm (default: from the model path).")
]
Dtype = Annotated[str | None, typer.Option("--dtype", help="float32 (default), bfloat16 or float16.")]
TemplateName = Annotated[
    str,
    typer.Option(
        "--template",
        help="Prompt template: auto (the model's own chat template, else llama2-zh), hf (the model's own, "
        "required), or a name from `zhllama plugins` (llama2-zh, alpaca, chatml, none for base models).",
    ),
]
SystemPrompt = Annotated[str | None, typer.Option("--system-prompt", help="System prompt (default: the template's).")]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", min=1, help="Most tokens per answer.")]
Temperature = Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature (0 = greedy).")]
TopP = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass.")]
TopK = Annotated[int, typer.Option("--top-k", min=0, help="Sample among the k best tokens (0 = all).")]
RepetitionPenalty = Annotated[float, typer.Option("--repetition-penalty", min=0.01, help="Penalty on repeated tokens.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Sampling seed (default 0: deterministic).")]
Greedy = Annotated[bool, typer.Option("--greedy", help="Always take the most likely token.")]
RopeScaling = Annotated[str | None, typer.Option("--rope-scaling", help="Long context: linear, dynamic, ntk or yarn.")]
RopeFactor = Annotated[
    str | None, typer.Option("--rope-factor", help="Scaling factor F, or `auto` (adaptive NTK; the ntk default).")
]
ContextLength = Annotated[
    int | None, typer.Option("--context-length", min=1, help="Usable context in tokens (default: from the model).")
]
DraftModel = Annotated[
    Path | None, typer.Option("--draft-model", help="Small model sharing the tokenizer, for speculative decoding.")
]
DraftK = Annotated[str, typer.Option("--draft-k", help="Tokens the draft proposes per step, or `auto`.")]


def load_options(lora, load, dtype, rope_scaling, rope_factor, context_length) -> LoadOptions:
    return LoadOptions(
        lora=[str(p) for p in lora or ()],
        load=load,
        dtype=dtype,
        context_length=context_length,
        rope_scaling=rope_scaling,
        rope_factor=rope_factor,
    )


def answer_stream(runtime: ChatRuntime, prompt_ids: list[int], params: GenerationParams, write: Callable[[str], None]):
    """Generate one answer, writing each chunk as it is produced; returns the finished `Reply`."""
    reply = runtime.reply(prompt_ids, params)
    for chunk in reply:
        write(chunk)
    return reply


def repl(
    runtime: ChatRuntime,
    params: GenerationParams,
    read: Callable[[str], str] = input,
    write: Callable[[str], None] | None = None,
) -> None:
    """The interactive loop: stream answers, keep history, /reset, /system TEXT, /exit.

    Ctrl-C while an answer streams stops that answer (what was shown stays in the history);
    Ctrl-C at the prompt clears the line; Ctrl-D or /exit leaves.
    """
    write = write or _stdout_write
    history = ChatHistory(runtime.prompt_ids, runtime.history_budget(params.max_new_tokens), runtime.system)
    console.log("commands: /reset (forget the conversation), /system TEXT (new system prompt), /exit")
    while True:
        try:
            line = read(">>> ").strip()
        except KeyboardInterrupt:
            write("\n")
            continue
        except EOFError:
            write("\n")
            return
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            history.reset()
            console.log("(conversation forgotten)")
            continue
        if line.startswith("/system"):
            history.system = line[len("/system") :].strip() or None
            history.reset()
            console.log("(new system prompt; conversation forgotten)")
            continue
        reply = runtime.reply(history.prompt_ids(line), params)
        try:
            for chunk in reply:
                write(chunk)
        except KeyboardInterrupt:
            console.log("\n(answer stopped)")
        write("\n")
        history.add(line, reply.text)


def _stdout_write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def one_shot(runtime: ChatRuntime, params: GenerationParams, prompt: str, as_json: bool, stats: bool) -> None:
    """Answer one prompt: stream the text (or write one JSON record) on stdout."""
    started = time.perf_counter()
    ids = runtime.prompt_ids([Message("user", prompt)])
    reply = answer_stream(runtime, ids, params, (lambda _chunk: None) if as_json else _stdout_write)
    seconds = time.perf_counter() - started
    record = {"prompt": prompt, "answer": reply.text, "finish_reason": reply.finish_reason, "usage": reply.usage}
    if runtime.decoder is not None:
        record["speculative"] = runtime.decoder.stats.as_dict()
    if as_json:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write("\n")
    sys.stdout.flush()
    if stats:
        rate = reply.usage["completion_tokens"] / seconds if seconds > 0 else 0.0
        extra = ""
        if runtime.decoder is not None:
            s = runtime.decoder.stats
            extra = f", draft accepted {s.accepted}/{s.proposed} ({s.acceptance_rate:.1%})"
        console.stderr.print(f"[{reply.usage['completion_tokens']} tokens, {rate:.1f} tokens/s{extra}]")


def chat(
    model: Model,
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="Answer this one prompt and exit.")] = None,
    lora: Lora = None,
    load: Load = None,
    engine: Engine = None,
    dtype: Dtype = None,
    template: TemplateName = "auto",
    system_prompt: SystemPrompt = None,
    max_new_tokens: MaxNewTokens = 512,
    temperature: Temperature = 0.2,
    top_p: TopP = 0.9,
    top_k: TopK = 40,
    repetition_penalty: RepetitionPenalty = 1.1,
    seed: SeedOpt = None,
    greedy: Greedy = False,
    rope_scaling: RopeScaling = None,
    rope_factor: RopeFactor = None,
    context_length: ContextLength = None,
    draft_model: DraftModel = None,
    draft_k: DraftK = "auto",
    stats: Annotated[
        bool, typer.Option("--stats", help="Print tokens/s and the draft acceptance rate on stderr.")
    ] = False,
) -> None:
    """Chat with a model: a streaming REPL on a terminal, one answer per --prompt or stdin line otherwise."""
    params = GenerationParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        seed=seed,
        greedy=greedy,
    )
    options = load_options(lora, load, dtype, rope_scaling, rope_factor, context_length)
    runtime = load_runtime(model, options, engine, template, system_prompt, draft_model, draft_k)
    try:
        if prompt is not None:
            one_shot(runtime, params, prompt, console.SETTINGS.json, stats)
        elif not sys.stdin.isatty():
            for line in sys.stdin:
                if line.strip():
                    one_shot(runtime, params, line.rstrip("\n"), console.SETTINGS.json, stats)
        else:
            repl(runtime, params)
    finally:
        runtime.close()


def register(app: typer.Typer) -> None:
    app.command(
        "chat",
        epilog=examples(
            "zhllama chat --model chinese-alpaca-2-7b",
            "zhllama chat --model tiny_zh --template none --greedy --prompt '你好'",
            "cat questions.txt | zhllama --json chat --model chinese-alpaca-2-7b --max-new-tokens 128",
            "zhllama chat --model chinese-alpaca-2-7b --rope-scaling ntk --rope-factor auto",
            "zhllama chat --model chinese-alpaca-2-7b --draft-model chinese-alpaca-2-1.3b --greedy --stats",
            "zhllama chat --model model-q4_0.gguf",
        ),
    )(chat)
