"""Full disk and read-only outputs, one real file system per command family (issue 24 point 3).

Each output lives on its own small tmpfs (mounted here; the tests skip when mounting is not
permitted), nearly filled by a filler file, so the kernel fails the command's writes with ENOSPC
as a real full disk does; a second round remounts them read-only (EROFS). For every family
(training, eval, predict, quantize, merge, convert, vocab) the command must exit 1 with exactly
one stderr line naming its output, print nothing on stdout, leave nothing on the file system but
the filler (no output, no folder, no temporary sibling), and leave every input byte-for-byte as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.robustness.conftest import snapshot
from zhllama.core.assets import data_path

pytestmark = pytest.mark.slow

MOUNT_SIZE = 4 << 20  # bytes of each tmpfs
FILLER = "filler"

# One interpreter (one start-up) runs each command line given as a tab-joined argument and prints
# its exit code; stderr carries the error lines in order.
SCRIPT = """
import sys
from zhllama.cli.app import run
codes = [str(run(argv.split("\\t"))) for argv in sys.argv[1:]]
print(" ".join(codes))
"""


def _mount(where: Path, read_only: bool = False) -> bool:
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={MOUNT_SIZE},mode=0777" + (",ro" if read_only else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return proc.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(where: Path, free: int) -> None:
    """Leave about `free` bytes of the tmpfs unused (a filler file takes the rest)."""
    st = os.statvfs(where)
    size = max(0, st.f_bavail * st.f_frsize - free)
    with open(where / FILLER, "wb") as f:
        f.write(b"\0" * size)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_zh_model, tiny_adapter) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("full_disk_inputs")
    shutil.copytree(tiny_zh_model, root / "model")
    shutil.copytree(tiny_adapter, root / "lora")
    shutil.copytree(data_path("ceval"), root / "ceval")
    prompts = [f"第{i}个问题：中国的首都是哪里？" for i in range(40)]
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
    shutil.copyfile(data_path("corpus_zh.txt"), root / "corpus.txt")
    shutil.copyfile(data_path("instructions.json"), root / "instructions.json")
    return {"root": root, **{p.stem: p for p in root.iterdir()}}


# family -> (free bytes left on its file system, the output inside the mount, argv builder)
FAMILIES = {
    "training": (
        16 << 10,
        "run",
        lambda i, out: [
            "pretrain",
            "-m",
            i["model"],
            "-d",
            i["corpus"],
            "-o",
            out,
            "--max-steps",
            "2",
            "--block-size",
            "32",
            "--lora-rank",
            "4",
            "--cache-dir",
            i["root"].parent / "train-cache",
        ],
    ),
    "eval": (
        2 << 10,
        "results",
        lambda i, out: ["eval", "ceval", "-m", i["model"], "--data-dir", i["ceval"], "-o", out],
    ),
    "predict": (
        2 << 10,
        "p.jsonl",
        lambda i, out: [
            "predict",
            "-m",
            i["model"],
            "-i",
            i["prompts"],
            "-o",
            out,
            "--greedy",
            "--max-new-tokens",
            "4",
        ],
    ),
    "quantize": (
        64 << 10,
        "m.gguf",
        lambda i, out: ["quantize", "gguf", "--model", i["model"], "--type", "F32", "-o", out],
    ),
    "merge": (64 << 10, "merged", lambda i, out: ["merge", "--base", i["model"], "--lora", i["lora"], "-o", out]),
    "convert": (
        64 << 10,
        "meta",
        lambda i, out: ["convert", "-i", i["model"], "-o", out, "--from", "hf", "--to", "meta"],
    ),
    "vocab": (
        4 << 10,
        "zh.model",
        lambda i, out: ["vocab", "train", "-i", i["corpus"], "--vocab-size", "1200", "-o", out],
    ),
}


@pytest.mark.parametrize("read_only", [False, True], ids=["disk-full", "read-only"])
def test_every_command_family_leaves_nothing_on_a_full_or_read_only_disk(tmp_path, inputs, read_only):
    mounts = {family: tmp_path / family for family in FAMILIES}
    mounted = []
    try:
        for family, where in mounts.items():
            if not _mount(where):
                pytest.skip("mounting a tmpfs is not permitted here (needs root)")
            mounted.append(where)
            free, _, _ = FAMILIES[family]
            _fill(where, free)
            if read_only:
                subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        before_inputs = snapshot(inputs["root"])
        before = {family: snapshot(where) for family, where in mounts.items()}
        commands = [[*FAMILIES[family][2](inputs, mounts[family] / FAMILIES[family][1])] for family in FAMILIES]
        env = dict(os.environ, OMP_NUM_THREADS="1", ZHLLAMA_CACHE=str(tmp_path / "zhllama-cache"))
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, *("\t".join(map(str, c)) for c in commands)],
            capture_output=True,
            text=True,
            env=env,
            timeout=1200,
        )
        codes = proc.stdout.split()
        lines = proc.stderr.splitlines()
        report = json.dumps(dict(zip(FAMILIES, codes, strict=False))) + "\n" + proc.stderr
        print(report)  # shown with -s / -rA when auditing
        assert codes == ["1"] * len(FAMILIES), report
        assert len(lines) == len(FAMILIES), report  # one line per command, nothing else
        # numpy's tofile (gguf) and torch.save (meta .pth) lose the errno: "a write was cut short"
        why = ("read-only file system",) if read_only else ("no space left on device", "a write was cut short")
        for family, line in zip(FAMILIES, lines, strict=True):
            output = mounts[family] / FAMILIES[family][1]
            assert line.startswith("zhllama: error: "), (family, line)
            assert str(mounts[family]) in line and any(w in line for w in why), (family, line)
            assert snapshot(mounts[family]) == before[family], (
                family,
                sorted(p.name for p in mounts[family].iterdir()),
            )
            assert not output.exists()
        assert snapshot(inputs["root"]) == before_inputs
    finally:
        for where in mounted:
            _umount(where)
