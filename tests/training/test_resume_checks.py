"""`--resume` validates the checkpoint it would read: a corrupt or foreign one is one line naming it
(and the checkpoint to fall back to), exit 2, with the output folder left as it was."""

from __future__ import annotations

import json

import pytest

from zhllama.core.assets import data_path

TRAIN = ["--lora-rank", "8", "--lora-alpha", "16", "--max-steps", "4", "--save-steps", "2", "--logging-steps", "1"]
TRAIN += ["--block-size", "32", "--learning-rate", "1e-3", "--seed", "1"]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, tiny_zh_model):
    """A pretrain run with checkpoint-2 and checkpoint-4 (its final files removed: 'killed' after step 4)."""
    from zhllama.cli.app import run

    out = tmp_path_factory.mktemp("resume") / "out"
    cache = out.parent / "cache"
    args = ["pretrain", "-m", tiny_zh_model, "-d", data_path("corpus_zh.txt"), "-o", out, "--cache-dir", cache, *TRAIN]
    assert run([str(a) for a in args]) == 0
    for p in out.iterdir():
        if p.name != "checkpoints":
            p.unlink() if p.is_file() else None
    return out, [str(a) for a in args]


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _resume(run_cli, args, out, *more):
    argv = [*args, "--resume", *more]
    argv[argv.index("-o") + 1] = str(out)
    return run_cli(*argv)


def test_resume_rejects_a_truncated_adapter(tmp_path, interrupted, run_cli):
    base, args = interrupted
    out = _copy(base, tmp_path / "out")
    weights = out / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    before = _snapshot(out)
    code, stdout, err = _resume(run_cli, args, out)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("zhllama: error: ")
    assert "checkpoint-4" in err and "adapter_model.safetensors" in err and "checkpoint-2" in err
    assert _snapshot(out) == before  # nothing written, nothing removed


def test_resume_rejects_a_checkpoint_of_another_task(tmp_path, interrupted, run_cli):
    base, args = interrupted
    out = _copy(base, tmp_path / "out")
    progress = out / "checkpoints" / "checkpoint-4" / "zhllama_progress.json"
    saved = json.loads(progress.read_text())
    assert saved["kind"] == "pretrain" and saved["step"] == 4  # what the run records
    progress.write_text(json.dumps({**saved, "kind": "dpo"}))
    code, _, err = _resume(run_cli, args, out)
    assert code == 2 and err.count("\n") == 1
    assert "checkpoint-4" in err and "zhllama dpo" in err


def test_resume_rejects_another_lora_shape(tmp_path, interrupted, run_cli):
    base, args = interrupted
    out = _copy(base, tmp_path / "out")
    argv = list(args)
    argv[argv.index("--lora-rank") + 1] = "4"
    code, _, err = _resume(run_cli, argv, out)
    assert code == 2 and err.count("\n") == 1
    assert "checkpoint-4" in err and "adapter_config.json" in err and "r is 8" in err and "4" in err


def test_resume_rejects_a_garbled_trainer_state_step(tmp_path, interrupted, run_cli):
    base, args = interrupted
    out = _copy(base, tmp_path / "out")
    state = out / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "global_step": 7}))
    code, _, err = _resume(run_cli, args, out)
    assert code == 2 and err.count("\n") == 1 and "checkpoint-4" in err


def test_resume_from_an_intact_checkpoint_passes_the_checks(tmp_path, interrupted, run_cli):
    """What the checks accept: the run's own checkpoint (checkpoint-2 once the corrupt newer one is removed)."""
    import shutil

    base, args = interrupted
    out = _copy(base, tmp_path / "out")
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    code, _, err = _resume(run_cli, args, out)
    assert code == 0, err
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"] == 2 and summary["steps"] == 4
