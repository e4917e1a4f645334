"""The documentation's code runs: the reading snippets of docs/format.md, against a shard set built here."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from helpers import make_dataset

from fastfashion.data.shard import ShardConfig, write_shards

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _section_code(path: Path, heading: str) -> list[str]:
    """The ```python blocks of one ``## `` section."""
    text = path.read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_format_reading_snippets_run(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "fmtdemo" / "data", train=20, val=8, test=8)
    manifest = write_shards(data, tmp_path / "fmtdemo" / "shards", ShardConfig(workers=1))
    blocks = _section_code(DOCS / "format.md", "9. Reading a set")
    assert len(blocks) == 3  # tarfile, random access through the .idx, webdataset
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        for code in blocks:
            exec(compile(code, str(DOCS / "format.md"), "exec"), namespace)  # the snippets share names, as in a REPL
    lines = out.getvalue().splitlines()
    n = {s: manifest["splits"][s]["num_samples"] for s in ("train", "val", "test")}
    assert len(lines) == n["train"] + n["test"] + n["val"]  # one line per sample read
    assert lines[n["train"]].endswith(str((-1,) * 6))  # the test split is unlabelled: all -1
