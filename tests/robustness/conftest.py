"""Inputs for the robustness cases: pristine sources built once, copied into each case's folder.

Every case works on private copies (`Workspace`), so a case whose guard fails (an output written
over an input) cannot spoil the others, and "inputs unchanged" is a sha256 comparison of the
case's own folder before and after the run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from zhllama.core.assets import data_path

BAD_UTF8 = "第一行没有问题\n".encode() + b"caf\xe9 latin-1\n"


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 (files), 'dir' (folders), 'link -> target' (symlinks), 'special'."""
    state: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_symlink():
            state[key] = f"link -> {path.readlink()}"
        elif path.is_dir():
            state[key] = "dir"
        elif path.is_file():
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[key] = "special"  # a FIFO: reading it would block
    return state


@pytest.fixture(scope="session")
def tiny_adapter(artifacts, tiny_zh_model, merged_tokenizer) -> Path:
    """A real PEFT LoRA adapter (q/v, r=4, non-zero B) for the tiny Chinese model, shipping its
    tokenizer as the Chinese-LLaMA LoRA releases do."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    out = artifacts / "robust_lora"
    model = LlamaForCausalLM.from_pretrained(tiny_zh_model)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    peft_model.save_pretrained(out)
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(merged_tokenizer / name, out / name)
    return out


@pytest.fixture(scope="session")
def sources(artifacts, base_tokenizer, merged_tokenizer, zh_sp_model, tiny_zh_model, tiny_adapter) -> dict[str, Path]:
    """Pristine inputs by name (never handed to a command: cases get copies)."""
    root = artifacts / "robust_sources"
    root.mkdir(exist_ok=True)
    (root / "bad.txt").write_bytes(BAD_UTF8)
    (root / "empty.txt").write_text("", encoding="utf-8")
    (root / "garbage.bin").write_bytes(bytes(range(256)) * 4)
    (root / "bad.json").write_text('[{"instruction": "a", "output": "b"}, {"instruction": ', encoding="utf-8")
    (root / "config.yaml").write_text("vocab-sise: 10\n", encoding="utf-8")
    (root / "broken.yaml").write_text("a: [1, 2\n", encoding="utf-8")
    return {
        "base_tok": base_tokenizer,
        "tok": merged_tokenizer,
        "sp": zh_sp_model,
        "model": tiny_zh_model,
        "lora": tiny_adapter,
        "text": data_path("corpus_zh.txt"),
        "instructions": data_path("instructions.json"),
        "conversations": data_path("conversations.jsonl"),
        "prefs": data_path("preference_pairs.jsonl"),
        "ceval": data_path("ceval"),
        "bad_text": root / "bad.txt",
        "empty_text": root / "empty.txt",
        "garbage": root / "garbage.bin",
        "bad_json": root / "bad.json",
        "unknown_key_yaml": root / "config.yaml",
        "broken_yaml": root / "broken.yaml",
    }


class Workspace:
    """A case's folder: `in/` holds copies of the inputs it names, `out/` receives its output.

    `w.model`, `w.tok`, ... copy the named source on first use; `w.make(name, builder)` runs a
    builder that crafts a bad input from copies; `w.out` is `out/result`.
    """

    def __init__(self, root: Path, sources: dict[str, Path]):
        self.root = root
        self.inputs = root / "in"
        self.outputs = root / "out"
        self.inputs.mkdir()
        self.outputs.mkdir()
        self._sources = sources
        self._made: dict[str, Path] = {}

    @property
    def out(self) -> Path:
        return self.outputs / "result"

    def __getattr__(self, name: str) -> Path:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._made:
            source = self._sources[name]
            target = self.inputs / (name + source.suffix if source.is_file() else name)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copyfile(source, target)
            self._made[name] = target
        return self._made[name]

    def make(self, name: str, builder: Callable[[Workspace, Path], None], suffix: str = "") -> Path:
        """A crafted input `in/NAME`: `builder(workspace, path)` writes it (once)."""
        if name not in self._made:
            path = self.inputs / (name + suffix)
            builder(self, path)
            self._made[name] = path
        return self._made[name]

    def text_file(self, name: str, content: str | bytes) -> Path:
        def write(_w: Workspace, path: Path) -> None:
            path.write_bytes(content.encode() if isinstance(content, str) else content)

        return self.make(name, write, ".txt")

    def json_file(self, name: str, value) -> Path:
        def write(_w: Workspace, path: Path) -> None:
            path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")

        return self.make(name, write, ".json")


@pytest.fixture
def workspace(tmp_path, sources) -> Workspace:
    return Workspace(tmp_path, sources)
