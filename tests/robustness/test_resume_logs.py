"""The one resumable output (`zhllama.core.appendlog.AppendLog`, issue 24 point 2 / issue 25 point 3).

Predict's `--output` and eval's `predictions.jsonl` are the same log: validated when opened (a torn
last line is dropped, reported and redone; a corrupt or foreign line is one error naming file and
line), appended in whole lines and fsynced, and a write the file system refuses is cut off again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os

import pytest

from zhllama.core import atomic
from zhllama.core.appendlog import AppendLog
from zhllama.core.assets import data_path
from zhllama.core.errors import UserError


def _log(path, **kwargs) -> AppendLog:
    return AppendLog(path, key=lambda r: r["id"], fields=("id",), what="test log", hint="use another file", **kwargs)


def _lines(*records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_torn_last_line_is_dropped_reported_and_cut_at_the_next_append(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    path.write_bytes(_lines({"id": 1}, {"id": 2}) + b'{"id": 3, "val')
    log = _log(path)
    assert list(log.records) == [1, 2] and log.dropped == b'{"id": 3, "val'
    assert "log.jsonl: dropped its last line (14 bytes without a line end" in capsys.readouterr().err
    log.append([{"id": 3, "value": "x"}])
    assert path.read_bytes() == _lines({"id": 1}, {"id": 2}, {"id": 3, "value": "x"})
    assert list(_log(path).records) == [1, 2, 3]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            _lines({"id": 1}) + b"{not json\n" + _lines({"id": 2}),
            r"log\.jsonl:2: not valid JSON \(column 2: .*not a test log; use another file",
        ),
        (_lines({"id": 1}, [1, 2]), r"log\.jsonl:2: expected a JSON object, got an array; not a test log"),
        (_lines({"name": "a foreign file"}), r"log\.jsonl:1: no 'id'; not a test log"),
        (
            b'{"id": "caf\xe9"}\n',
            r"log\.jsonl:1: not UTF-8 text \(byte 11: invalid continuation byte\); not a test log",
        ),
    ],
    ids=["corrupt-line", "not-an-object", "foreign", "non-utf8"],
)
def test_corrupt_or_foreign_log_is_one_error_naming_file_and_line(tmp_path, content, message):
    path = tmp_path / "log.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        _log(path)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == content


def test_symlink_or_folder_in_place_of_the_log_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "link.jsonl").symlink_to(victim)
    with pytest.raises(UserError, match=r"link\.jsonl: not a regular file \(a symlink\); refusing to append"):
        _log(tmp_path / "link.jsonl")
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(UserError, match=r"dir\.jsonl: not a regular file \(a folder"):
        _log(tmp_path / "dir.jsonl")
    assert victim.read_text() == "precious\n"


def test_every_append_is_fsynced_before_it_counts(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_size), real(fd)))
    log = _log(tmp_path / "out" / "log.jsonl")
    log.append([{"id": 1}, {"id": 2}])
    log.append([{"id": 3}])
    assert synced == [len(_lines({"id": 1}, {"id": 2})), len(_lines({"id": 1}, {"id": 2}, {"id": 3}))]


def _full_disk_after(monkeypatch, nbytes: int):
    """os.write stores `nbytes` then fails with ENOSPC (a disk that fills mid-line)."""
    real = os.write

    def write(fd, data):
        if len(data) > nbytes:
            real(fd, bytes(data[:nbytes]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_a_refused_write_is_cut_off_and_finished_records_stay(tmp_path, monkeypatch):
    path = tmp_path / "log.jsonl"
    path.write_bytes(_lines({"id": 1}))
    log = _log(path)
    log.append([{"id": 2}])
    before = path.read_bytes()
    _full_disk_after(monkeypatch, 5)
    with pytest.raises(OSError) as info:
        log.append([{"id": 3}, {"id": 4}])
    assert f"zhllama output: {path}" in info.value.__notes__
    assert path.read_bytes() == before and list(log.records) == [1, 2]


def test_a_log_that_could_not_store_its_first_line_is_removed_with_its_folder(tmp_path, monkeypatch):
    atomic.begin_run()
    path = tmp_path / "results" / "log.jsonl"
    log = _log(path)
    _full_disk_after(monkeypatch, 3)
    with pytest.raises(OSError):
        log.append([{"id": 1}])
    atomic.end_run(failed=True)
    assert list(tmp_path.iterdir()) == []


def test_fresh_log_keeps_the_old_file_aside_until_the_run_ends(tmp_path, monkeypatch):
    path = tmp_path / "log.jsonl"
    old = _lines({"id": 1}, {"id": 2})
    path.write_bytes(old)
    atomic.begin_run()
    log = _log(path, fresh=True)
    assert log.records == {}
    _full_disk_after(monkeypatch, 2)
    with pytest.raises(OSError):
        log.append([{"id": 7}])
    assert path.read_bytes() == old  # nothing new could be stored: the previous file is back
    monkeypatch.undo()
    log.append([{"id": 7}])
    assert len(list(tmp_path.iterdir())) == 2  # the new log and the old one, aside
    atomic.end_run(failed=False)
    assert list(tmp_path.iterdir()) == [path] and path.read_bytes() == _lines({"id": 7})


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_eval_resumes_over_a_torn_last_line_and_refuses_a_corrupt_one(tmp_path, tiny_zh_model, run_cli):
    out = tmp_path / "res"
    args = ["eval", "ceval", "-m", tiny_zh_model, "--data-dir", data_path("ceval"), "-o", out, "--limit", "3"]
    code, _, err = run_cli("--json", *args)
    assert code == 0, err
    log = out / "predictions.jsonl"
    full = log.read_bytes()
    log.write_bytes(full[:-40])  # the last record cut by an interruption
    code, stdout, err = run_cli("--json", *args)
    assert code == 0, err
    assert "dropped its last line" in err and "resuming: " in err
    redone = [json.loads(x) for x in log.read_bytes().splitlines()]
    first = [json.loads(x) for x in full.splitlines()]
    # the same records, in the same order; the redone one was scored alone (batch of 1): equal to fp32 noise
    assert [{k: v for k, v in r.items() if k != "scores"} for r in redone] == [
        {k: v for k, v in r.items() if k != "scores"} for r in first
    ]
    assert all(r["scores"] == pytest.approx(f["scores"], abs=1e-5) for r, f in zip(redone, first, strict=True))
    lines = full.splitlines(keepends=True)
    log.write_bytes(lines[0] + b"garbage\n" + b"".join(lines[1:]))
    before = _sha(log)
    code, stdout, err = run_cli(*args)
    assert (
        code == 2
        and stdout == ""
        and err.splitlines()
        == [
            f"zhllama: error: {log}:2: not valid JSON (column 1: Expecting value); not a zhllama predictions log; "
            "choose another --output, or remove the file to start over"
        ]
    )
    assert _sha(log) == before
