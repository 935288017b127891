"""`zhllama serve` under 1, 4 and 16 concurrent streaming clients: continuous batching vs serial.

The same server command is started twice on a tiny 4-layer model (the merged Chinese tokenizer):
`--max-batch-size 16` (continuous batching) and the baseline `--max-batch-size 1` (one answer at a
time, arrival order: what `serve` did before batching). Each client sends streaming greedy chat
requests back to back (distinct prompts, `max_tokens` 64). Both servers are up at once and their
runs alternate (best of REPEATS each), so a load change on the machine hits both; reported: total completion
tokens/s (from `stream_options.include_usage`), p50/p99 time to first token, and whether every
stream ended with `[DONE]` and every answer equals the serial server's answer to the same prompt.
Goal (issue 23): 16 clients, batched >= 5x the serial server's throughput.

With llama-cpp-python's server installed (`llama_cpp.server`), the same load also runs against it
on a GGUF of the same model (completions endpoint, so both see the same raw prompt).

Every server runs with one intra-op thread (`OMP_NUM_THREADS=1` unless set): a tiny model gains
nothing from more, and on the shared 2-core machine two spinning OpenMP threads per process make
every step ~10x slower and the timings erratic.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIENTS = (1, 4, 16)
REPEATS = 2
MAX_TOKENS = 64
BATCH = 16
WORDS = ["你好", "北京", "上海的历史", "写一首关于春天的诗", "1+1等于几？", "广州", "介绍一下长城", "杭州西湖"]


def _prompts(count: int) -> list[str]:
    return [f"{WORDS[i % len(WORDS)]}{'。' * (i // len(WORDS))}" for i in range(count)]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, log) -> None:
    import httpx

    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            raise RuntimeError(f"server did not start: {log.read()[-2000:]}")
        time.sleep(0.3)


def _start(cmd: list[str]) -> tuple[subprocess.Popen, str]:
    port = _port()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty server never blocks on it
    proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=log, stderr=log, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    _wait(url, proc, log)
    return proc, url


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _one(client, url: str, prompt: str, chat: bool, usage: bool = True) -> dict:
    body = {"max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    if usage:
        body["stream_options"] = {"include_usage": True}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
        route = "/v1/chat/completions"
    else:
        body["prompt"] = prompt
        route = "/v1/completions"
    start = time.perf_counter()
    first, parts, tokens, done = None, [], 0, False
    async with client.stream("POST", url + route, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices") or []:
                text = choice.get("text") if not chat else (choice.get("delta") or {}).get("content")
                if text:
                    if first is None:
                        first = time.perf_counter() - start
                    parts.append(text)
    if not usage:
        tokens = len(parts)  # a server without usage in streams: one text chunk per token
    return {"prompt": prompt, "text": "".join(parts), "tokens": tokens, "ttft": first, "done": done}


async def _load(url: str, clients: int, chat: bool = True, usage: bool = True) -> dict:
    import httpx

    per_client = max(2, 16 // clients)
    prompts = _prompts(clients * per_client)

    async def client_loop(client, mine):
        return [await _one(client, url, p, chat, usage) for p in mine]

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await _one(client, url, "热身", chat, usage)  # warm-up: first-request costs out of the timing
        start = time.perf_counter()
        runs = await asyncio.gather(*(client_loop(client, prompts[c::clients]) for c in range(clients)))
        wall = time.perf_counter() - start
    answers = [a for run in runs for a in run]
    ttfts = sorted(a["ttft"] for a in answers if a["ttft"] is not None)
    tokens = sum(a["tokens"] for a in answers)
    return {
        "tokens_per_s": tokens / wall,
        "ttft_p50_s": _percentile(ttfts, 50),
        "ttft_p99_s": _percentile(ttfts, 99),
        "requests": len(answers),
        "tokens": tokens,
        "all_done": all(a["done"] for a in answers),
        "texts": {a["prompt"]: a["text"] for a in answers},
    }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, round(q / 100 * (len(values) - 1))))
    return values[k]


def _side_by_side(cmds: dict[str, list[str]], chat: bool = True, usage: bool = True, no_usage=()) -> dict:
    """{label: {clients: run}} with every server up at once and the runs interleaved (each client
    count: every server in turn, REPEATS times, the fastest kept), so they share the machine's load."""
    started = {}
    try:
        for label, cmd in cmds.items():
            started[label] = _start(cmd)
        out: dict = {label: {} for label in cmds}
        for clients in CLIENTS:
            for _ in range(REPEATS):
                for label, (_proc, url) in started.items():
                    run = asyncio.run(_load(url, clients, chat, usage and label not in no_usage))
                    best = out[label].get(clients)
                    if best is None or run["tokens_per_s"] > best["tokens_per_s"]:
                        out[label][clients] = run
        return out
    finally:
        for proc, _url in started.values():
            _stop(proc)


def _llama_cpp_server(model_dir: Path, work: Path) -> list[str] | None:
    """The command of llama-cpp-python's server on an F32 GGUF of the model, or None when it is not
    installed (`pip install 'llama-cpp-python[server]'`; ZHLLAMA_LLAMA_CPP_PYTHON may name another
    interpreter that has it)."""
    python = os.environ.get("ZHLLAMA_LLAMA_CPP_PYTHON", sys.executable)
    probe = subprocess.run([python, "-c", "import llama_cpp.server.app"], capture_output=True)
    if probe.returncode != 0:
        return None
    from zhllama.core.quantize.gguf_export import write_gguf

    gguf = work / "model-f32.gguf"
    write_gguf(model_dir, gguf, "F32")
    server = [python, "-m", "llama_cpp.server", "--model", str(gguf), "--n_ctx", "2048", "--host", "127.0.0.1"]
    return [*server, "--interrupt_requests", "False"]  # its default cuts a running stream at each new request


def main() -> dict:
    from benchmarks._models import tiny_model
    from zhllama.core.tiny import TinyShape

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = tiny_model(work, TinyShape(num_hidden_layers=4))
        serve = [sys.executable, "-m", "zhllama", "serve", "-m", str(model), "--template", "llama2-zh"]
        serve += ["--max-new-tokens", str(MAX_TOKENS), "--max-queue", "256"]
        runs = _side_by_side(
            {"serial": [*serve, "--max-batch-size", "1"], "batched": [*serve, "--max-batch-size", str(BATCH)]}
        )
        reference = runs["serial"][1]["texts"]
        for label, by_clients in runs.items():
            for clients, run in by_clients.items():
                texts = run.pop("texts")
                run["equal_to_serial"] = all(reference.get(p, t) == t for p, t in texts.items())
                run["mismatches"] = sum(reference.get(p, t) != t for p, t in texts.items())
                for key, value in run.items():
                    results[f"{label}_{clients}_{key}"] = value
        for clients in CLIENTS:
            ratio = runs["batched"][clients]["tokens_per_s"] / runs["serial"][clients]["tokens_per_s"]
            results[f"batched_vs_serial_{clients}_clients"] = ratio
        results["batched_16_vs_serial_1_client"] = (
            runs["batched"][16]["tokens_per_s"] / runs["serial"][1]["tokens_per_s"]
        )
        llama = _llama_cpp_server(model, work)
        if llama is None:
            results["llama_cpp_server"] = "skipped: llama-cpp-python's server (llama-cpp-python[server]) not installed"
        else:
            ours_cmd = [*serve, "--max-batch-size", str(BATCH)]
            both = _side_by_side({"ours": ours_cmd, "theirs": llama}, chat=False, no_usage=("theirs",))
            ours, theirs = both["ours"], both["theirs"]
            for run in ours.values():
                run.pop("texts")
            for clients in CLIENTS:
                results[f"completions_batched_{clients}_tokens_per_s"] = ours[clients]["tokens_per_s"]
                results[f"llama_cpp_server_{clients}_tokens_per_s"] = theirs[clients]["tokens_per_s"]
                results[f"llama_cpp_server_{clients}_ttft_p50_s"] = theirs[clients]["ttft_p50_s"]
                results[f"llama_cpp_server_{clients}_ttft_p99_s"] = theirs[clients]["ttft_p99_s"]
                results[f"llama_cpp_server_{clients}_all_done"] = theirs[clients]["all_done"]
                theirs[clients].pop("texts")
                results[f"batched_vs_llama_cpp_server_{clients}_clients"] = (
                    ours[clients]["tokens_per_s"] / theirs[clients]["tokens_per_s"]
                )
    for key, value in results.items():
        print(f"{key:44s} {value:10.3f}" if isinstance(value, float) else f"{key:44s} {value}")
    print(
        f"16 streaming clients: batched {results['batched_vs_serial_16_clients']:.2f}x the serial server "
        f"({results['batched_16_vs_serial_1_client']:.2f}x one client at a time; goal >= 5x); "
        f"all streams [DONE]: {results['batched_16_all_done']}, greedy equal to serial: "
        f"{results['batched_16_equal_to_serial']}"
    )
    return results


if __name__ == "__main__":
    main()
