"""Hostile inputs and crashes: never a silent loss or duplicate, and an error that names the fix."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import TESTS, demo_texts, thresher, write_pipeline
from faults import CRASH_EXIT
from thresher.pipeline.core.files import StorageError
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.errors import TaskFailed
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.lock import LockHeld, RunLock
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner


def _run(path: Path, **kw):
    return Runner(load_config(path), executor=InlineExecutor(), progress=Progress(False), **kw).run()


def _twin_files(folder: Path, n: int = 40) -> list[str]:
    """Two files holding the same n {doc_id, text} lines (the same export saved twice)."""
    texts = demo_texts("scripture", n, min_words=25)
    for name in ("a.jsonl", "sub/b.jsonl"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("".join(json.dumps({"doc_id": f"d{i:03d}", "text": t}) + "\n"
                                           for i, t in enumerate(texts)))
    return texts


def _consistent(out: Path) -> dict:
    """The manifest of `out`, after checking that its data files hold exactly the rows it lists."""
    manifest = json.loads((out / "manifest.json").read_text())
    files = sorted((out / "data").glob("*.parquet"))
    assert [f.name for f in files] == manifest["output"]["files"]
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == manifest["output"]["rows"]
    return manifest


# --- 1. Thresher's own files are never inputs -------------------------------------------------

def test_output_and_work_dir_inside_the_input_glob_are_never_ingested(tmp_path):
    corpus = tmp_path / "corpus"
    pq.write_table(pa.table({"text": demo_texts("python_docs", 40, min_words=25)}), corpus.mkdir() or corpus / "a.parquet")
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["corpus/**/*.parquet"]}],
                       stages=[{"stage": "exact_dedup"}], output={"dir": "corpus/out"}, work_dir="corpus/work")
    counts = []
    for _ in range(3):
        res = thresher("run", p, "-q")
        assert res.returncode == 0, res.stderr
        m = _consistent(corpus / "out")
        counts.append((m["totals"]["rows_in"], m["output"]["rows"], m["inputs"]["files"]))
    assert counts == [(40, 40, 1)] * 3
    assert "left out: Thresher never reads its own output or work dir" in res.stderr
    # Another run's output under the glob (written with -o) is Thresher's too.
    assert thresher("run", p, "-q", "-o", corpus / "other").returncode == 0
    assert _consistent(corpus / "other")["totals"]["rows_in"] == 40
    # Nothing left but Thresher's own files: an error that says so, not an empty run.
    (corpus / "a.parquet").unlink()
    res = thresher("run", p, "-q")
    assert res.returncode == 2 and "lie in Thresher's own output or work dirs" in res.stderr


# --- 2. Publishing the output is atomic -------------------------------------------------------

def _publish_killed(p: Path) -> subprocess.CompletedProcess:
    """`thresher run` killed (os._exit) at the moment it would publish a completely written output."""
    code = ("import os, sys; from thresher.pipeline.engine import publish; "
            "publish.OutputDir.publish = lambda self, version: os._exit(9); "
            "from thresher.pipeline.commands.cli import main; sys.argv[0] = 'thresher'; main()")
    return subprocess.run([sys.executable, "-c", code, "run", str(p), "-q"], capture_output=True, text=True)


def test_a_crash_before_or_while_publishing_keeps_the_old_output_whole(tmp_path):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t}) + "\n"
                                              for t in demo_texts("fortunes", 120)))
    stages = lambda n: [{"stage": "length_filter", "min_words": n}, {"stage": "exact_dedup"}]  # noqa: E731
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["d.jsonl"]}], stages=stages(5))
    first = _consistent(_run(p).output_dir)
    out = tmp_path / "out"

    # SIGKILL-like exit right after the last stage, then while publishing: the old output stays.
    write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["d.jsonl"]}], stages=stages(20))
    crashed = subprocess.run([sys.executable, str(TESTS / "faults.py"), "exact_dedup", str(p)],
                             capture_output=True, text=True)
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    assert _consistent(out) == first
    assert _publish_killed(p).returncode == 9
    assert _consistent(out) == first
    # The rerun completes, publishes the new output and clears the unfinished version.
    second = _consistent(_run(p).output_dir)
    assert second["config_hash"] != first["config_hash"] and second["output"]["rows"] < first["output"]["rows"]
    assert len(list((out / ".thresher" / "versions").iterdir())) == 1

    # A failure while writing the new output (here: the first data shard) leaves the old one.
    write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["d.jsonl"]}], stages=stages(10))
    from thresher.pipeline.engine import runner

    real = runner.FinalizeTask.__call__

    def failing(self, shard):
        if self.write:
            raise StorageError("cannot write: simulated")
        return real(self, shard)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner.FinalizeTask, "__call__", failing)
        with pytest.raises(TaskFailed, match="simulated"):
            _run(p)
    assert _consistent(out) == second
    assert len(list((out / ".thresher" / "versions").iterdir())) == 1


def test_an_output_written_by_an_older_thresher_is_adopted_then_replaced(tmp_path):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in demo_texts("fortunes", 30)))
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["d.jsonl"]}], stages=[])
    legacy = tmp_path / "out"
    (legacy / "data").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), legacy / "data" / "part-old.parquet")
    (legacy / "manifest.json").write_text(json.dumps({"thresher_version": "0.0.1"}))
    _run(p)
    assert (legacy / "data").is_symlink() and not list((legacy / "data").glob("part-old*"))
    assert _consistent(legacy)["output"]["rows"] == 30


@contextlib.contextmanager
def _tmpfs(path: Path, size: str, read_only: bool = False):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True)
    options = f"size={size}" + (",ro" if read_only else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)])


def test_disk_full_while_publishing_keeps_the_old_output_and_names_the_path(tmp_path):
    rows = [{"text": t} for t in demo_texts("python_docs", 300)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with _tmpfs(tmp_path / "small", "4m") as disk:
        p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["d.jsonl"]}], stages=[],
                           output={"dir": str(disk / "out")})
        first = _consistent(_run(p).output_dir)
        ballast = disk / "ballast"
        free = shutil.disk_usage(disk).free
        ballast.write_bytes(b"\0" * (free - 64 * 1024))
        write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["d.jsonl"]}], stages=[{"stage": "exact_dedup"}],
                       output={"dir": str(disk / "out")})
        res = thresher("run", p, "-q")
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert str(disk / "out") in res.stderr and "disk is full" in res.stderr
        assert _consistent(disk / "out") == first
        ballast.unlink()
        assert thresher("run", p, "-q").returncode == 0
        assert "exact_hash" in _consistent(disk / "out")["output"]["columns"]


def test_disk_full_in_the_work_dir_names_the_path_and_the_fix(tmp_path):
    rows = [{"text": t} for t in demo_texts("python_docs", 400)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with _tmpfs(tmp_path / "small", "256k") as disk:
        p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["d.jsonl"]}], stages=[{"stage": "exact_dedup"}],
                           work_dir=str(disk / "work"))
        res = thresher("run", p, "-q")
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert str(disk / "work") in res.stderr and "disk is full" in res.stderr


# --- 3. Rows sharing an id --------------------------------------------------------------------

def test_exact_copies_sharing_ids_across_files_keep_one_row_each(tmp_path):
    texts = _twin_files(tmp_path)
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["**/*.jsonl"], "id_column": "doc_id"}],
                       stages=[{"stage": "exact_dedup"}], shard_rows=15)
    res = thresher("run", p)
    assert res.returncode == 0, res.stderr
    assert "warning: 40 id(s) repeat across the inputs (40 extra rows; e.g. 'd000' in a.jsonl, sub/b.jsonl)" in res.stderr
    m = _consistent(tmp_path / "out")
    assert (m["totals"]["rows_in"], m["output"]["rows"]) == (80, 40)
    assert m["inputs"]["duplicate_ids"]["ids"] == 40 and m["inputs"]["duplicate_ids"]["mode"] == "warn"
    out = pq.read_table(tmp_path / "out" / "data")
    assert sorted(out["text"].to_pylist()) == sorted(texts)
    assert set(out["source"].to_pylist()) == {"a.jsonl"}  # the total order: id, then source, then position


def test_near_duplicates_sharing_an_id_keep_one_representative(tmp_path):
    texts = demo_texts("scripture", 30, min_words=60)
    lines = [{"doc_id": f"d{i}", "text": t} for i, t in enumerate(texts)]
    lines += [{"doc_id": f"d{i}", "text": t + " amen"} for i, t in enumerate(texts)]  # same ids, edited copies
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["d.jsonl"]}], stages=[{"stage": "minhash_dedup"}],
                       shard_rows=20)
    write_pipeline(p, inputs=[{"paths": ["d.jsonl"], "id_column": "doc_id"}], stages=[{"stage": "minhash_dedup"}],
                   shard_rows=20)
    m = _run(p).manifest
    assert m["stages"][1]["rejected"] == {"near_duplicate": 30} and m["output"]["rows"] == 30


def test_on_duplicate_id_error_and_suffix(tmp_path):
    _twin_files(tmp_path, 5)
    inputs = [{"paths": ["**/*.jsonl"], "id_column": "doc_id"}]
    p = write_pipeline(tmp_path / "p.yaml", inputs=inputs, stages=[], on_duplicate_id="error")
    res = thresher("run", p, "-q")
    assert res.returncode == 2 and "5 id(s) occur more than once" in res.stderr
    assert "'d000' x2 in a.jsonl, sub/b.jsonl" in res.stderr and "on_duplicate_id: suffix" in res.stderr
    write_pipeline(p, inputs=inputs, stages=[], on_duplicate_id="suffix", shard_rows=2)
    m = _run(p).manifest
    ids = pq.read_table(tmp_path / "out" / "data").sort_by("id")
    assert sorted(ids["id"].to_pylist()) == sorted([f"d{i:03d}" for i in range(5)] + [f"d{i:03d}#1" for i in range(5)])
    renamed = ids.filter(pa.compute.match_substring(ids["id"], "#1"))
    assert set(renamed["source"].to_pylist()) == {"sub/b.jsonl"}
    assert m["inputs"]["duplicate_ids"]["renamed"] == 5


def test_suffixed_ids_are_unique_against_every_id_of_the_run(tmp_path):
    """d0 twice and an input id d0#1: the later d0 becomes d0#2, never a second d0#1."""
    texts = demo_texts("scripture", 6, min_words=25)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"doc_id": i, "text": t}) + "\n"
                                              for i, t in zip(["d0", "d0#1", "e#1", "e"], texts)))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"doc_id": i, "text": t}) + "\n"
                                              for i, t in zip(["d0", "e"], texts[4:])))
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["*.jsonl"], "id_column": "doc_id"}], stages=[],
                       on_duplicate_id="suffix")
    m = _run(p).manifest
    out = pq.read_table(tmp_path / "out" / "data")
    ids = out["id"].to_pylist()
    assert len(set(ids)) == len(ids) == 6 and m["inputs"]["duplicate_ids"]["renamed"] == 2
    renamed = dict(zip(out["text"].to_pylist(), ids))
    assert renamed[texts[4]] == "d0#2" and renamed[texts[5]] == "e#2"


def test_gc_leaves_a_live_runs_checkpoints_alone(tmp_path):
    """gc of pipeline A while a run (here: a process holding the run's work-dir lock) is using the
    work dir: it removes nothing, says so and names the holder; once the run has ended it removes
    what A does not use."""
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in demo_texts("fortunes", 20)))
    a = write_pipeline(tmp_path / "a.yaml", inputs=[{"paths": ["d.jsonl"]}], stages=[])
    b = write_pipeline(tmp_path / "b.yaml", inputs=[{"paths": ["d.jsonl"]}], stages=[{"stage": "normalize"}],
                       output={"dir": "out-b"})
    _run(a)
    _run(b)
    work = tmp_path / "work"
    folders = sorted(p.name for p in work.iterdir())
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from thresher.pipeline.engine.lock import RunLock; "
        f"RunLock(__import__('pathlib').Path({str(work / '.thresher' / 'lock')!r}), 'work dir', 'b-key').acquire(); "
        "print('held', flush=True); time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = thresher("gc", work, a, "--yes")
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert f"in use by pid {holder.pid}" in res.stderr and "gc listed and removed nothing" in res.stderr
        assert sorted(p.name for p in work.iterdir()) == folders
    finally:
        holder.kill()
        holder.wait()
    res = thresher("gc", work, a, "--yes")
    assert res.returncode == 0 and "removing" in res.stdout and not list(work.glob("normalize-*"))


def test_gc_of_a_folder_that_is_no_work_dir_is_refused_and_left_unmarked(tmp_path):
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["d.jsonl"]}], stages=[])
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    (tmp_path / "mine").mkdir()
    res = thresher("gc", tmp_path / "mine", p)
    assert res.returncode == 2 and "is not a work dir Thresher wrote" in res.stderr and "Traceback" not in res.stderr
    assert not list((tmp_path / "mine").iterdir())


def test_input_key_content_sees_a_file_changed_in_its_bytes_only(tmp_path):
    """A file rewritten with the same size and modification time: `input_key: stat` (the default,
    documented) reuses the earlier ingest; `input_key: content` hashes the bytes and reads it again."""
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "alpha beta gamma"}) + "\n")
    stamp = path.stat().st_mtime_ns
    for key in ("stat", "content"):
        p = write_pipeline(tmp_path / f"{key}.yaml", inputs=[{"paths": ["d.jsonl"]}], stages=[], input_key=key,
                           work_dir=f"w-{key}", output={"dir": f"o-{key}"})
        path.write_text(json.dumps({"text": "alpha beta gamma"}) + "\n")
        os.utime(path, ns=(stamp, stamp))
        _run(p)
        path.write_text(json.dumps({"text": "delta beta gamma"}) + "\n")  # same size
        os.utime(path, ns=(stamp, stamp))  # and the same time
        again = _run(p)
        texts = pq.read_table(again.output_dir / "data")["text"].to_pylist()
        assert texts == (["alpha beta gamma"] if key == "stat" else ["delta beta gamma"]), key
        assert again.manifest["stages"][0]["run"] == ("reused" if key == "stat" else "computed")


# --- 8. One run at a time ---------------------------------------------------------------------

def test_a_second_run_on_the_same_work_dir_is_refused_and_says_who_holds_it(tmp_path):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in demo_texts("fortunes", 20)))
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["d.jsonl"]}], stages=[])
    _run(p)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from thresher.pipeline.engine.lock import RunLock; "
        f"RunLock(__import__('pathlib').Path({str(tmp_path / 'work' / '.thresher' / 'lock')!r}), 'work dir', 'k').acquire(); "
        "print('held', flush=True); time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = thresher("run", p, "-q")
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert f"is in use by pid {holder.pid} on" in res.stderr and "work key k" in res.stderr
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone (killed): its lock went with it.
    assert thresher("run", p, "-q").returncode == 0
    with RunLock(tmp_path / "out" / ".thresher" / "lock", "output dir", "mine"):
        with pytest.raises(LockHeld, match=r"output dir .*out is in use by pid \d+ .*work key mine"):
            _run(p)


# --- 10. Every error is one line naming the path and the fix --------------------------------

def _one_line_error(res, *words):
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr and res.stderr.count("error:") == 1, res.stderr[-2000:]
    for w in words:
        assert str(w) in res.stderr, (w, res.stderr)


def test_a_dangling_link_among_the_inputs_is_named(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "alpha"}) + "\n")
    (tmp_path / "b.jsonl").symlink_to(tmp_path / "gone.jsonl")
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["*.jsonl"]}], stages=[])
    _one_line_error(thresher("run", p, "-q"), tmp_path / "b.jsonl", "a link to a missing file")
    debug = thresher("--debug", "run", p, "-q")  # the traceback too, for a bug report
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "a link to a missing file" in debug.stderr


def test_an_output_dir_that_is_a_file_or_the_work_dir_is_named(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "alpha"}) + "\n")
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["a.jsonl"]}], stages=[])
    (tmp_path / "file").write_text("x")
    _one_line_error(thresher("run", p, "-q", "-o", tmp_path / "file"), tmp_path / "file", "is a file, not a folder")
    for out in ("work", "work/out"):  # the run would hold its own lock twice; a work dir inside an output
        _one_line_error(thresher("run", p, "-q", "-o", tmp_path / out), "give each a folder of its own")
    assert not (tmp_path / "work").exists()


def test_a_read_only_output_folder_is_named(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "alpha"}) + "\n")
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["a.jsonl"]}], stages=[])
    with _tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        _one_line_error(thresher("run", p, "-q", "-o", ro / "out"), ro / "out", "check that the folder exists")


def test_an_input_changed_during_the_run_is_one_line(tmp_path, monkeypatch):
    """A Parquet input read in place, rewritten between ingest and the stage that reads its text."""
    from thresher.pipeline.engine.runner import Runner as RunnerClass

    texts = demo_texts("python_docs", 200)
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": texts}), path, row_group_size=50)
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["in.parquet"]}], stages=[{"stage": "normalize"}],
                       shard_rows=100)
    check_ids = RunnerClass._check_ids

    def rewrite_then_check(self, *args):
        pq.write_table(pa.table({"text": texts[::-1]}), path, row_group_size=50)
        return check_ids(self, *args)

    monkeypatch.setattr(RunnerClass, "_check_ids", rewrite_then_check)
    _one_line_error(thresher("run", p, "-q"), path, "the input changed")


def test_a_key_given_twice_in_the_yaml_is_an_error_with_both_lines(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("inputs:\n  - paths: [a.jsonl]\noutput:\n  dir: one\nstages: []\noutput:\n  dir: two\n")
    res = thresher("validate", p)
    _one_line_error(res, "output (line 6): `output` is given twice (lines 3 and 6)")


def test_exporting_a_run_that_kept_no_rows_says_so(tmp_path):
    from thresher.scorers.tokenizer import train_bpe_tokenizer

    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "tiny"}) + "\n")
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["a.jsonl"]}],
                       stages=[{"stage": "length_filter", "min_words": 5}])
    assert _run(p).manifest["output"]["rows"] == 0
    train_bpe_tokenizer(demo_texts("mirror"), 300, tmp_path / "tok")
    res = thresher("export", tmp_path / "out", "--tokenizer", tmp_path / "tok", "-d", tmp_path / "shards")
    assert res.returncode == 0 and "the run kept no rows" in res.stdout, res.stderr
    assert json.loads((tmp_path / "shards" / "export.json").read_text())["tokens"] == 0
    _one_line_error(thresher("export", tmp_path, "--tokenizer", tmp_path / "tok", "-d", tmp_path / "s2"),
                    "has no manifest.json")
