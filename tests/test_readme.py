"""Every snippet of README.md and docs/*.md runs as written: each ```python block and each command line of the
indented command blocks, in document order, one working folder per ``## `` section (a sibling of
``shared/FashionDataset``, so ``../shared/FashionDataset`` is the tiny synthetic set built once for this module).

What may differ from the text is stated in the tables below, and nothing else:

* :data:`SUBSTITUTIONS`: data paths and URLs (``/tmp/ff/real``, example.com, placeholders) and the odd size;
* :data:`SHRINK`: flags appended to a verb's command line so that it runs in seconds (argparse keeps the last
  value: ``--epochs 45`` then ``--epochs 1`` trains one epoch);
* :data:`SETUP`: what a section takes as the user's own (a CSV beside its photos, tars from another tool, an S3
  bucket, a shard set);
* :data:`SKIP`: what cannot run here, each with the reason, keyed by a piece of the snippet; a key that matches no
  snippet fails the test (no stale skips), and so does a substitution or setup that is never used. The sections
  "Using it with Lightning" and "Using it in your own DDP script" are run by their own tests (SKIP_HEADINGS).

How each runs: ``fastfashion ARGS`` as ``fastfashion.cli.main(ARGS)`` in this process (no interpreter start per
line), leading ``VAR=value`` words set the environment for that call, ``taskset -c N`` (CPU pinning for timings) is
dropped; ``python benchmarks/SCRIPT.py ARGS`` as ``__main__`` in this process too (``runpy``: the interpreter's
start is what a subprocess would add; these scripts start no worker processes). A python block with an
``if __name__ == "__main__":`` guard is a script (it starts DataLoader workers or DALI): it is written to a file and
run by the interpreter, as a user runs it; the others are executed in this process, the blocks of a section sharing
their names as in one session (the reading snippets of docs/format.md build on each other).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import HAVE_DALI, make_dataset
from remote_servers import http_server, s3_server
from second_set import write_csv_set, write_outside_shards

from fastfashion.data.shard import ShardConfig, write_shards

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))]
SIZES = {"train": 64, "val": 16, "test": 16}  # one full batch of 64 for the README's make_loader loop

# (text in the snippet, what replaces it): data paths and URLs, and sizes a flag cannot override
SUBSTITUTIONS = [
    ("/tmp/ff10/real", "ff10/real"),  # absolute scratch folders of the Performance and Remote sections -> the section's
    ("/tmp/ff/real", "ff/real"),
    ("https://example.com/sets/fashion", "{http}/README-using-it/shards/FashionDataset"),  # the module's server
    ("--shards SHARD_DIR --source SRC_DIR", "--shards shards/FashionDataset --source ../shared/FashionDataset"),
    ("--rounds 3 --window", "--rounds 1 --batch-size 8 --image-size 16 --window"),  # remote_throttle.py
    ("--train-steps 12", "--train-steps 1"),  # the training benchmark: one timed step per feeder
    ("--rounds 5 --batches 20 --workers 2",  # benchmarks/uint8.py: one tiny round of each variant
     "--rounds 1 --batches 1 --warmup 0 --batch-size 8 --image-size 16 --workers 0"),
    ("convert.py ../shared/FashionDataset --rounds 3 --workers 2",  # the conversion benchmark: one cheap round
     "convert.py ../shared/FashionDataset --rounds 1 --workers 1 --engines serial,local"),
    ("--replicate 8 --rounds 3 --workers 2 --engines serial,local,ray-warm",
     "--replicate 2 --rounds 1 --workers 1 --engines serial,local"),
]

# flags appended to a verb's arguments (argparse keeps the last value): minutes of work become seconds
SHRINK = {
    "synth": ["--train", "8", "--val", "4", "--test", "4"],
    "train": ["--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--image-size", "16", "--workers", "0"],
    "bench": ["--rounds", "1", "--batches", "1", "--warmup", "0", "--batch-size", "8", "--image-size", "16",
              "--workers", "0"],
}
# flags appended only where the line does not give them: bench's training part (30 steps by default) runs only
# where the text asks for it
UNLESS_GIVEN = {"bench": {"--train-steps": "0"}}

# a piece of the snippet (a command line or a python block) -> why it does not run here
SKIP = {
    "make demo": "the whole demo (one to two minutes); tests/test_bench.py runs it small",
    "make test": "the test suite itself",
    "torchrun --nproc_per_node=4": "4 processes; torchrun on 2 runs in tests/test_train.py and test_resume.py (long)",
    "#SBATCH": "a SLURM directive",
    "R=; test -f runs/r1/last.pt && R=--resume": "SLURM's requeue idiom: needs srun",
    "srun fastfashion train": "needs SLURM",
    "!R=; test -f /content/drive": "Colab cell syntax (!) and a Drive folder",
    'pip install -e ".[s3]"': "installs packages (s3fs is in the dev extra)",
    'pip install -e ".[ray,s3]"': "installs packages (Ray and s3fs are in the dev extra)",
    "--weights imagenet": "downloads ImageNet weights: no network here",
    "loader = FashionLoader(shard_dir, LoaderConfig(": "an API synopsis (each keyword with its default), not a program",
    "w_c = N / (K · n_c)": "a formula, not a command",
    "ray job submit": "needs a Ray cluster's job server; tests/test_engines.py runs the engine on a local Ray",
}
SKIP_HEADINGS = ("Using it with Lightning", "Using it in your own DDP script")  # run by their own tests

# python blocks that make a loader must be scripts (the guard): DataLoader workers import the script again, and a
# loader is torch and DALI in one process. A piece of such a block -> why it is a fragment instead
FRAGMENTS = {
    "loader = make_loader(\"shards/mine\", backend=\"dali\", augment=my_augment)":
        "docs/loader.md's transform example (that page is the loader's): no import, no guard; run after PRELUDE",
}

# a piece of the snippet -> it needs NVIDIA DALI (skipped without it: DALI has no wheels for macOS or Windows)
NEEDS_DALI = ["from nvidia.dali import", "--backends dali-cpu --json b.json", "python benchmarks/remote_throttle.py"]


@dataclass
class Snippet:
    doc: str        # README.md, docs/format.md ...
    line: int       # where it starts
    kind: str       # "python" or "command"
    text: str
    headings: tuple[str, ...]  # the enclosing headings, outermost first

    @property
    def section(self) -> tuple[str, str]:
        """The document and its ``## `` heading (without the ``## ``) the snippet is in."""
        return self.doc, next((h[3:] for h in self.headings if h.startswith("## ")), "")

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def extract(doc: str) -> list[Snippet]:
    """The ```python blocks and the command lines of the indented blocks (outside fences; ``\\`` continues a
    line; ``# ...`` comments dropped) of one document."""
    lines = (REPO / doc).read_text(encoding="utf-8").split("\n")
    out: list[Snippet] = []
    headings: list[str] = []
    fence, start, body = None, 0, []
    pending, pending_line = "", 0
    for i, line in enumerate(lines, start=1):
        if fence is not None:
            if line.startswith("```"):
                if fence == "python":
                    out.append(Snippet(doc, start, "python", "\n".join(body) + "\n", tuple(headings)))
                fence = None
            else:
                body.append(line)
            continue
        if line.startswith("```"):
            fence, start, body = line[3:].strip(), i + 1, []
            continue
        m = re.match(r"(#+) ", line)
        if m:
            headings = [h for h in headings if len(h.split(" ", 1)[0]) < len(m.group(1))] + [line]
            continue
        indented = line.startswith("    ") and (pending or i == 1 or lines[i - 2].strip() == ""
                                              or lines[i - 2].startswith("    "))
        if indented and line.strip():
            text = pending + " " + line.strip() if pending else line.strip()
            pending_line = pending_line if pending else i
            if text.endswith("\\"):
                pending = text[:-1].rstrip()
                continue
            out.append(Snippet(doc, pending_line, "command", text, tuple(headings)))
            pending = ""
    return out


ALL = [s for doc in DOCUMENTS for s in extract(doc)]


def skipped(s: Snippet) -> str | None:
    """Why ``s`` does not run here, or None."""
    if any(h.lstrip("# ").startswith(SKIP_HEADINGS) for h in s.headings):
        return "run by its own test"
    return next((why for key, why in SKIP.items() if key in s.text), None)


RUN = [s for s in ALL if skipped(s) is None]
SECTIONS = list(dict.fromkeys(s.section for s in RUN))


def folder_name(section: tuple[str, str]) -> str:
    """``README-using-it``: the document's stem and the section's first words."""
    return f"{Path(section[0]).stem}-{re.sub(r'[^a-z0-9]+', '-', section[1].lower()).strip('-')[:30].strip('-')}"


def by_heading(table: dict, section: tuple[str, str]):
    """The entry of ``table`` (keyed by document and heading prefix) for ``section``, or None."""
    return next((v for (doc, head), v in table.items() if doc == section[0] and section[1].startswith(head)), None)


# --- what the sections take as given ----------------------------------------------------------------------------
def _byod(d: Path, world: dict) -> None:
    """The user's own data of "Bring your own data": a folder in the FashionDataset layout, a CSV beside its photos,
    tars written by webdataset's own writer."""
    shutil.copytree(world["shared"], d / "mydata")
    write_csv_set(d)  # d/labels.csv (path,digit,tone,split), d/schema.json, d/images/
    (d / "images").rename(d / "photos")
    write_outside_shards(d / "tars", "json")


def _remote(d: Path, world: dict) -> None:
    """s3://bucket/ on the module's moto server (reached through AWS_ENDPOINT_URL, as with any S3-compatible store)."""
    import s3fs
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    if not fs.exists("bucket"):
        fs.mkdir("bucket")
    (d / "benchmarks" / "results").mkdir(parents=True)  # remote_throttle.py --json benchmarks/results/...


PRELUDE = {  # (document, the start of a ## heading) -> code run before the section's python blocks
    # docs/loader.md's transform snippet uses make_loader without importing it (the page's Public API section does)
    ("docs/loader.md", "Augmentation"): "from fastfashion import make_loader",
}

def _bucket_source(d: Path, world: dict) -> None:
    """The synthetic FashionDataset in s3://bucket/FashionDataset on the module's moto server."""
    import s3fs
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    if not fs.exists("bucket"):
        fs.mkdir("bucket")
    fs.put(str(world["shared"]), "bucket/FashionDataset", recursive=True)


SETUP = {  # (document, the start of a ## heading) -> what the section takes as given
    ("docs/cluster.md", "Running it"): _bucket_source,
    ("docs/cluster.md", "Reading a set back"):
        lambda d, world: shutil.copytree(world["fashion_shards"], d / "shards" / "FashionDataset"),
    ("README.md", "Bring your own data"): _byod,
    ("README.md", "Remote shards"): _remote,
    ("docs/format.md", "9. Reading a set"):
        lambda d, world: shutil.copytree(world["fashion_shards"], d / "fmtdemo" / "shards"),
    ("docs/loader.md", "Augmentation"):
        lambda d, world: shutil.copytree(world["csv_shards"], d / "shards" / "mine"),
    ("docs/loader.md", "Speed: side by side"):
        lambda d, world: shutil.copytree(world["fashion_shards"], d / "shards" / "FashionDataset"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny synthetic set at ``shared/FashionDataset``, shard sets for the sections that start from one, an
    http server over the root and a moto S3 server, and the environment every snippet sees."""
    root = tmp_path_factory.mktemp("readme")
    shared = make_dataset(root / "shared" / "FashionDataset", **SIZES)
    base = root / "given"
    write_shards(shared, base / "fashion", ShardConfig(workers=1))
    csv = write_csv_set(base / "csv")
    write_shards(csv, base / "mine", ShardConfig(workers=1, images=base / "csv" / "images"))
    with contextlib.ExitStack() as stack, pytest.MonkeyPatch.context() as env:
        # matplotlib keeps its font cache under XDG_CACHE_HOME, changed below: keep the session's (built once)
        env.setenv("MPLCONFIGDIR", os.environ.get("MPLCONFIGDIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "matplotlib"))
        http = stack.enter_context(http_server(root))
        opts, _ = stack.enter_context(s3_server())
        env.setenv("AWS_ENDPOINT_URL", opts["client_kwargs"]["endpoint_url"])
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("XDG_CACHE_HOME", str(root / "cache"))  # the remote section's cache, and nothing else's
        env.setenv("WIDS_CACHE", str(root / "wids-cache"))  # wids copies even local shards there
        env.setenv("MPLBACKEND", "Agg")
        env.setenv("PYTHONPATH", os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
        yield {"root": root, "shared": shared, "fashion_shards": base / "fashion", "csv_shards": base / "mine",
               "http": http}


# --- running one snippet ----------------------------------------------------------------------------------------
def _substituted(text: str, world: dict) -> str:
    for old, new in SUBSTITUTIONS:
        text = text.replace(old, new.format(http=world["http"]))
    return text


def _run_command(s: Snippet, cwd: Path, world: dict) -> str:
    from fastfashion.cli import main
    argv = shlex.split(_substituted(s.text, world), comments=True)
    env = {}
    while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
        k, v = argv.pop(0).split("=", 1)
        env[k] = v
    if argv[:2] == ["taskset", "-c"]:
        argv = argv[3:]
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        if argv[0] == "fastfashion":
            args = argv[1:] + SHRINK.get(argv[1], [])
            args += [x for flag, v in UNLESS_GIVEN.get(argv[1], {}).items() if flag not in args for x in (flag, v)]
            out, err = io.StringIO(), io.StringIO()
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    rc = main(args)
            except SystemExit as e:  # argparse
                rc = e.code
            assert rc == 0, f"{s}: `{s.text}` exited {rc}: {err.getvalue().strip()[-2000:]}"
            return out.getvalue()
        if argv[0] == "python" and argv[1].endswith(".py"):
            script = argv[1] if Path(argv[1]).is_absolute() else str(REPO / argv[1])
            mp.setattr(sys, "argv", [script, *argv[2:]])
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    runpy.run_path(script, run_name="__main__")
            except SystemExit as e:
                assert e.code in (0, None), f"{s}: `{s.text}` exited {e.code}"
            return out.getvalue()
    raise AssertionError(f"{s}: no way to run `{s.text}` here: add it to SKIP with the reason")


def _subprocess(s: Snippet, cmd: list[str], cwd: Path) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "Traceback" not in p.stderr, \
        f"{s}: exited {p.returncode}:\n{p.stderr[-3000:]}"
    return p.stdout


def _run_python(s: Snippet, cwd: Path, world: dict, namespace: dict) -> str:
    code = _substituted(s.text, world)
    if re.search(r'^if __name__ == "__main__":', code, flags=re.M):  # a script: run as one
        script = cwd / f"snippet_{s.line}.py"
        script.write_text(code, encoding="utf-8")
        return _subprocess(s, [sys.executable, script.name], cwd)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(s), "exec"), namespace)
    return out.getvalue()


@pytest.mark.parametrize("section", SECTIONS, ids=folder_name)
def test_section_snippets_run_as_written(section, world, monkeypatch):
    """Every snippet of one section, in order, in the section's own working folder."""
    cwd = world["root"] / folder_name(section)
    cwd.mkdir()
    setup = by_heading(SETUP, section)
    if setup is not None:
        setup(cwd, world)
    monkeypatch.chdir(cwd)
    namespace: dict = {"__name__": "__main__"}
    exec(by_heading(PRELUDE, section) or "", namespace)
    outputs = {}
    for s in (s for s in RUN if s.section == section):
        if not HAVE_DALI and any(key in s.text for key in NEEDS_DALI):
            continue
        if s.kind == "python":
            outputs[s.line] = _run_python(s, cwd, world, namespace)
        else:
            outputs[s.line] = _run_command(s, cwd, world)
    check = by_heading(CHECKS, section)
    if check is not None:
        check(cwd, outputs)


# --- what the runs must have produced, beyond a zero exit -----------------------------------------------------------
def _check_using_it(d: Path, out: dict) -> None:
    assert (d / "shards" / "FashionDataset" / "manifest.json").is_file()
    assert (d / "shards" / "FashionDataset" / "class-hist-train.png").is_file()  # inspect: in the set
    assert len((d / "prediction.txt").read_text().splitlines()) == SIZES["test"] and (d / "bench.json").is_file()
    assert any("['train', 'val', 'test']" in o for o in out.values())  # the ShardSet snippet, over http


def _check_byod(d: Path, out: dict) -> None:
    m = json.loads((d / "shards" / "mine" / "manifest.json").read_text())
    assert [a["name"] for a in m["schema"]["attributes"]] == ["digit", "tone"]  # the CSV's set, last written
    assert (d / "tars" / "manifest.json").is_file() and (d / "shards" / "made" / "val.wids.json").is_file()
    assert any(o.strip() == "torch.Size([8, 3, 48, 32])" for o in out.values())  # the torchvision script


def _check_remote(d: Path, out: dict) -> None:
    assert len((d / "p.txt").read_text().splitlines()) == SIZES["test"]  # predict --offline on the default split
    assert (d / "plots" / "class-hist-train.png").is_file()


def _check_performance(d: Path, out: dict) -> None:
    assert (d / "curves.png").is_file()  # time_to_accuracy.py over the two runs
    train = json.loads((d / "train-bench.json").read_text())["train"]
    assert set(train) >= {"in-memory batch (ceiling)", "torch"}


CHECKS = {("README.md", "Using it"): _check_using_it, ("README.md", "Bring your own data"): _check_byod,
          ("README.md", "Remote shards"): _check_remote, ("README.md", "Performance"): _check_performance}


# --- the tables stay true ---------------------------------------------------------------------------------------
def test_every_skip_substitution_and_setup_is_used():
    """No stale entries: each SKIP key matches a snippet, each substitution and shrink applies to one that runs, each
    setup and check names a section that runs."""
    for key in SKIP:
        assert any(key in s.text for s in ALL), f"SKIP {key!r} matches no snippet any more: remove it"
    for key in NEEDS_DALI:
        assert any(key in s.text for s in RUN), f"NEEDS_DALI {key!r} matches no snippet that runs"
    for old, _ in SUBSTITUTIONS:
        assert any(old in s.text for s in RUN), f"substitution {old!r} applies to no snippet that runs"
    for verb in [*SHRINK, *UNLESS_GIVEN]:
        assert any(s.kind == "command" and f"fastfashion {verb} " in s.text for s in RUN), f"SHRINK {verb!r} unused"
    for (doc, head), code in PRELUDE.items():  # a prelude the section now does itself goes
        assert not any(code in s.text for s in RUN if s.doc == doc and s.section[1].startswith(head)), code
    for table in (SETUP, CHECKS, PRELUDE):
        for doc, head in table:
            assert any(d == doc and h.startswith(head) for d, h in SECTIONS), f"no section {head!r} runs in {doc}"


def test_a_snippet_that_makes_a_loader_is_a_script():
    """A python block with a loader runs as a script, under ``if __name__ == "__main__":`` (saved as a file, one
    without the guard dies in its DataLoader workers), unless listed in FRAGMENTS."""
    for s in RUN:
        if s.kind == "python" and re.search(r"\bmake_loader\(|\bFashionLoader\(", s.text):
            guarded = 'if __name__ == "__main__":' in s.text
            fragment = any(key in s.text for key in FRAGMENTS)
            assert guarded != fragment, f"{s}: a loader snippet needs the __main__ guard (or a FRAGMENTS entry)"
    for key in FRAGMENTS:
        assert any(key in s.text for s in RUN), f"FRAGMENTS {key!r} matches no snippet any more: remove it"


def test_extraction_finds_what_the_documents_hold():
    """The extractor sees every python block and indented command (counted independently of it)."""
    for doc in DOCUMENTS:
        text = (REPO / doc).read_text(encoding="utf-8")
        assert sum(s.kind == "python" for s in ALL if s.doc == doc) == text.count("```python\n")
        assert sum(s.kind == "command" and s.text.startswith("fastfashion ") for s in ALL if s.doc == doc) == \
            len(re.findall(r"^    fastfashion ", text, flags=re.M))
