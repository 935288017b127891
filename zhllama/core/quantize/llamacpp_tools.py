"""llama.cpp's own command-line tools (llama-imatrix, llama-quantize, llama-perplexity), built once.

llama-cpp-python's `llama_model_quantize` takes the importance matrix only as a pointer to a C++
map, so imatrix quantization goes through llama.cpp's tools, built with cmake from the llama.cpp
source vendored in the llama-cpp-python sdist of the installed version (the same source the binding
was built from; nothing of llama.cpp is kept in this repository):

    python -m zhllama.core.quantize.llamacpp_tools        # or: make llamacpp-tools

Where the tools are looked for: `$ZHLLAMA_LLAMACPP_TOOLS` (a folder holding the three binaries),
else `$ZHLLAMA_CACHE/llama.cpp-tools/llama-cpp-python-VERSION/` (default cache `~/.cache/zhllama`).
The build is static (no shared libraries to find) and native to the CPU it ran on, as pip's build of
the binding is. Measured: 2 cores, cmake `--build -j2` of the three targets, see docs/README.

AMX CPUs: llama.cpp 0.3.36's weight repacking ("extra buffer types") crashes batched decoding on
AMX (see `core/loading/llamacpp.py`); the tools that run the model get `--no-repack` on such CPUs
(`ZHLLAMA_LLAMACPP_REPACK=1` keeps repacking, `=0` turns it off everywhere), as `new_llama` does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from zhllama.core.errors import MissingDependencyError, UserError

TOOLS = ("llama-imatrix", "llama-quantize", "llama-perplexity")
PINNED_VERSION = "0.3.36"  # the llama-cpp-python the llamacpp extra installs
BUILD_HINT = "python -m zhllama.core.quantize.llamacpp_tools (or: make llamacpp-tools)"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
)


def binding_version() -> str:
    """The installed llama-cpp-python's version (its vendored llama.cpp is the one built), else the pin."""
    from importlib import metadata

    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return PINNED_VERSION


def cache_dir(version: str | None = None) -> Path:
    root = Path(os.environ.get("ZHLLAMA_CACHE", Path.home() / ".cache" / "zhllama"))
    return root / "llama.cpp-tools" / f"llama-cpp-python-{version or binding_version()}"


def tools_dir() -> Path:
    """Where the tools are taken from: `$ZHLLAMA_LLAMACPP_TOOLS`, else the cache folder."""
    configured = os.environ.get("ZHLLAMA_LLAMACPP_TOOLS")
    return Path(configured) if configured else cache_dir()


def available() -> bool:
    folder = tools_dir()
    return all(os.access(folder / name, os.X_OK) for name in TOOLS)


def find_tool(name: str, why: str = "") -> Path:
    """The path of llama.cpp's `name`, or a one-line error saying how to build it."""
    folder = tools_dir()
    path = folder / name
    if not os.access(path, os.X_OK):
        where = (
            f"$ZHLLAMA_LLAMACPP_TOOLS={folder}" if os.environ.get("ZHLLAMA_LLAMACPP_TOOLS") else f"the cache {folder}"
        )
        raise MissingDependencyError(
            f"{why + ' needs ' if why else ''}llama.cpp's {name}, not found in {where}; build it once with: {BUILD_HINT}"
        )
    return path


def _amx_cpu() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_int8" in flags or " amx_tile" in flags


def repack_args() -> list[str]:
    """`--no-repack` where `new_llama` turns repacking off (AMX CPUs, or ZHLLAMA_LLAMACPP_REPACK=0)."""
    setting = os.environ.get("ZHLLAMA_LLAMACPP_REPACK")
    if setting == "1" or (setting != "0" and not _amx_cpu()):
        return []
    return ["--no-repack"]


def last_error_line(output: str) -> str:
    """The most telling line of a failed tool's log: an error line, else the last non-empty one."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        low = line.lower()
        if "error" in low or "failed" in low or "exception" in low:
            return line
    return lines[-1] if lines else "(no output)"


def run_tool(name: str, args: list[str], why: str, threads: int | None = None) -> str:
    """Run a llama.cpp tool; its log (stdout + stderr) is returned, a failure is one line."""
    tool = find_tool(name, why)
    command = [str(tool), *args]
    if threads:
        command += ["-t", str(threads)]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    if result.returncode != 0:
        raise UserError(
            f"{why}: llama.cpp's {name} failed (exit {result.returncode}): {last_error_line(result.stdout)}"
        )
    return result.stdout


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(version: str | None = None, dest: Path | None = None, jobs: int = 2, sdist: Path | None = None) -> dict:
    """Download llama-cpp-python's sdist with pip, build the three tools with cmake, install into `dest`."""
    version = version or binding_version()
    dest = Path(dest) if dest else cache_dir(version)
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise MissingDependencyError(f"building llama.cpp's tools needs {tool} (apt-get install cmake g++)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".build-") as tmp:
        work = Path(tmp)
        if sdist is None:
            _log(f"downloading the llama-cpp-python {version} sdist with pip")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
                + [f"llama-cpp-python=={version}", "-d", str(work)],
                check=True,
            )
            sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as archive:
            archive.extractall(work / "src", filter="data")
        source = next((work / "src").glob("llama_cpp_python-*/vendor/llama.cpp"))
        build_dir = work / "build"
        configured = time.perf_counter()
        _log(f"building {', '.join(TOOLS)} from {source.relative_to(work / 'src')} (cmake, {jobs} jobs)")
        subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), *CMAKE_FLAGS], check=True)
        subprocess.run(["cmake", "--build", str(build_dir), f"-j{jobs}", "--target", *TOOLS], check=True)
        built = time.perf_counter()
        staged = work / "bin"
        staged.mkdir()
        for tool in TOOLS:
            shutil.copy2(build_dir / "bin" / tool, staged / tool)
        info = {
            "llama_cpp_python": version,
            "tools": list(TOOLS),
            "cmake_flags": list(CMAKE_FLAGS),
            "jobs": jobs,
            "build_seconds": round(built - configured, 1),
            "total_seconds": round(time.perf_counter() - started, 1),
        }
        (staged / "BUILD_INFO.json").write_text(json.dumps(info, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
    return info


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build llama.cpp's llama-imatrix, llama-quantize, llama-perplexity.")
    parser.add_argument("--version", default=None, help="llama-cpp-python version (default: the installed one)")
    parser.add_argument("--dest", type=Path, default=None, help="install folder (default: the zhllama cache)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sdist", type=Path, default=None, help="a downloaded llama-cpp-python sdist")
    parser.add_argument("--force", action="store_true", help="rebuild even when the tools are there")
    args = parser.parse_args(argv)
    dest = args.dest or cache_dir(args.version)
    if not args.force and all(os.access(dest / t, os.X_OK) for t in TOOLS):
        _log(f"llama.cpp tools already built in {dest}")
        return 0
    info = build(args.version, dest, args.jobs, args.sdist)
    _log(f"built in {info['build_seconds']} s (total {info['total_seconds']} s): {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
