"""Every row of `cases.CASES` as a test: a hostile command line must fail cleanly.

Clean means: the expected exit code; stdout empty; stderr exactly one line, starting
`zhllama: error:` and matching the row's regex; the case's folder (inputs and the output's
parent) byte-for-byte as before: nothing written, nothing left behind, no input changed.
"""

from __future__ import annotations

import re

import pytest

from tests.robustness.cases import CASES, KINDS
from tests.robustness.conftest import snapshot


def _params():
    for case in CASES:
        marks = []
        if case.pending:
            marks.append(pytest.mark.xfail(reason=f"issue 18: fix owned by {case.pending} not landed", strict=False))
        yield pytest.param(case, id=case.id, marks=marks)


def test_table_covers_every_kind_and_has_unique_ids():
    assert {c.kind for c in CASES} == set(KINDS)
    assert len({c.id for c in CASES}) == len(CASES)
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", list(_params()))
def test_bad_input_fails_cleanly(case, workspace, run_cli):
    argv = case.argv(workspace)  # materialises the inputs the case names
    before = snapshot(workspace.root)
    code, out, err = run_cli(*argv)
    lines = err.splitlines()
    print(f"exit {code}: {err}")  # shown by `pytest -rA` when auditing the table
    assert code == case.code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("zhllama: error: "), err
    assert re.search(case.match, lines[0]), lines[0]
    assert out == ""
    assert snapshot(workspace.root) == before
