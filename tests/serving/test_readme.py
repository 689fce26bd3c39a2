"""The README's Python snippets run as written (the serving one against tiny generated bundles)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_the_snippets():
    blocks = python_blocks()
    assert len(blocks) == 2
    assert "upper_fast.Index" in blocks[0] and "Retriever.load" in blocks[1]


def test_index_quickstart_runs():
    exec(compile(python_blocks()[0], "README.md[index]", "exec"), {})


def test_serving_quickstart_runs(tmp_path, capsys):
    pytest.importorskip("torch")  # the tiny bundles are exported from a small torch tower
    from serve_tiny import tiny_bundle

    tiny_bundle(tmp_path, "bundle", seed=0)
    tiny_bundle(tmp_path, "bundle_v2", seed=1)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(python_blocks()[1], "README.md[serving]", "exec"), {})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) > 0  # the bundle returned hits for the query
