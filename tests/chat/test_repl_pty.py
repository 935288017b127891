"""The REPL on a real terminal: SIGINT (Ctrl-C) stops the running answer, the program goes on."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time

import pytest


def _read_until(fd: int, marker: bytes, seen: bytearray, count: int = 1, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while seen.count(marker) < count:
        assert time.monotonic() < deadline, f"timed out waiting for {marker!r}; got {bytes(seen)[-300:]!r}"
        try:
            seen += os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break


@pytest.mark.slow
def test_ctrl_c_stops_the_answer_not_the_program(tiny_zh_model):
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "zhllama", "chat", "-m", str(tiny_zh_model), "--greedy", "--max-new-tokens", "1500"]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = bytearray()
    try:
        _read_until(master, b">>> ", seen)
        os.write(master, "你好\n".encode())
        start = len(seen)
        while len(seen) < start + 40:  # the answer is streaming
            seen += os.read(master, 4096)
        proc.send_signal(signal.SIGINT)
        _read_until(master, b"(answer stopped)", seen)
        _read_until(master, b">>> ", seen, count=2)  # a new prompt after the stopped answer
        assert proc.poll() is None  # still running, waiting for the next question
        os.write(master, b"/exit\n")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


@pytest.mark.slow
def test_typing_while_streaming_is_not_echoed_and_unknown_commands_are_listed(tiny_zh_model):
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "zhllama", "chat", "-m", str(tiny_zh_model), "--greedy", "--max-new-tokens", "400"]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = bytearray()
    try:
        _read_until(master, b">>> ", seen)
        os.write(master, b"/rest\n")
        _read_until(master, b"unknown command /rest", seen)
        _read_until(master, b">>> ", seen, count=2)
        os.write(master, "你好\n".encode())
        start = len(seen)
        while len(seen) < start + 20:  # the answer is streaming
            seen += os.read(master, 4096)
        os.write(master, b"XYZZY typed during the answer\n")
        _read_until(master, b"(stopped at --max-new-tokens)", seen)
        _read_until(master, b">>> ", seen, count=3)
        assert b"XYZZY" not in seen  # neither echoed into the answer nor sent as the next question
        os.write(master, b"/exit\n")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
