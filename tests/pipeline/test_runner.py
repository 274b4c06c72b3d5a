"""The engine end to end: accounting, resume, determinism, output format."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import TESTS, thresher, write_pipeline
from faults import CRASH_EXIT
from thresher.pipeline.core.stage import Resources, Stage, mark_dropped
from thresher.pipeline.engine import registry
from thresher.pipeline.engine.accounting import AccountingError
from thresher.pipeline.engine.config import ConfigError, load_config
from thresher.pipeline.engine.errors import StageContractError, TaskFailed
from thresher.pipeline.engine.executor import InlineExecutor, RayExecutor
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner, apply_stage, plan_segments

STAGES = [{"stage": "normalize"}, {"stage": "length_filter", "min_words": 30},
          {"stage": "exact_dedup"}, {"stage": "minhash_dedup"}, {"stage": "softdedup"}]


def _pipeline(tmp_path: Path, data: Path, name="p.yaml", **extra) -> Path:
    inputs = [{"paths": [str(data / "*.jsonl.gz")], "id_column": "doc_id", "domain_column": "domain"}]
    return write_pipeline(tmp_path / name, inputs=inputs, stages=STAGES, **extra)


def _run(path: Path, executor=None, **kw):
    return Runner(load_config(path), executor=executor or InlineExecutor(), progress=Progress(False), **kw).run()


def _digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "data").glob("*.parquet"))}


def test_accounting_adds_up_against_the_files(demo_subset, tmp_path):
    res = _run(_pipeline(tmp_path, demo_subset))
    m = res.manifest
    stages = m["stages"]
    assert [s["name"] for s in stages] == ["ingest", "normalize", "length_filter", "exact_dedup",
                                           "minhash_dedup", "softdedup"]
    for prev, cur in zip(stages, stages[1:]):
        assert cur["rows_in"] == prev["rows_out"]
    for s in stages:
        assert s["rows_in"] == s["rows_out"] + sum(s["rejected"].values())
    # Planted respaced copies in mirror.jsonl.gz are exact duplicates after normalisation.
    assert stages[3]["rejected"]["exact_duplicate"] >= 40
    rejected = pq.read_table(res.output_dir / "rejected")
    out = pq.read_table(res.output_dir / "data")
    assert out.num_rows + rejected.num_rows == m["totals"]["rows_in"] == stages[0]["rows_in"]
    by_reason = {}
    for stage, reason in zip(rejected["drop_stage"].to_pylist(), rejected["drop_reason"].to_pylist()):
        by_reason[f"{stage}:{reason}"] = by_reason.get(f"{stage}:{reason}", 0) + 1
    assert by_reason == m["totals"]["rejected"]
    assert set(out["id"].to_pylist()).isdisjoint(rejected["id"].to_pylist())
    assert out["weight"].to_pylist() == out["softdedup_weight"].to_pylist()
    assert stages[4]["rejected"]["near_duplicate"] >= 5  # edited mirror copies
    # mirror.jsonl.gz also carries copies of fortunes, so that group appears too.
    assert m["output"]["groups"].keys() == {"scripture", "python-docs", "fortunes"}
    assert m["timing"]["stage_seconds"]["executor_start"] == 0.0  # one process: nothing to wait for


def test_exact_dedup_keeps_the_smallest_id(demo_subset, tmp_path):
    res = _run(_pipeline(tmp_path, demo_subset))
    from thresher.scorers.hashing import text_hashes

    stage = res.stage_dirs["03-exact_dedup"]
    after = res.rows("03-exact_dedup")
    # Its checkpoint holds only the kept rows' input positions and the column it adds.
    assert pq.read_schema(next(stage.out.glob("part-*.parquet"))).names == ["_pos", "exact_hash"]
    kept = dict(zip(after["exact_hash"].to_pylist(), after["id"].to_pylist()))
    assert len(kept) == after.num_rows  # no two kept rows share a hash
    dups = pq.read_table(stage.rejected)
    assert dups.num_rows == res.manifest["stages"][3]["rejected"]["exact_duplicate"]
    for h, doc_id in zip(text_hashes(dups["text"]).tolist(), dups["id"].to_pylist()):
        assert kept[h] < doc_id  # the survivor is the smallest id of its hash
    # The global pass's summary is saved beside its state; a rerun finalizes from the summaries
    # alone, without unpickling any state (here: with every state file gone).
    summary = res.manifest["stages"][3]["state"]
    assert summary == {"texts_kept": after.num_rows}
    for state in res.work_dir.glob("*/state/state.pkl"):
        state.unlink()
    again = _run(_pipeline(tmp_path, demo_subset))
    assert again.manifest["stages"][3]["state"] == summary
    assert again.manifest["output"] == res.manifest["output"]


def test_resume_after_a_crash_between_stages(demo_subset, tmp_path):
    cfg = _pipeline(tmp_path, demo_subset)
    crashed = subprocess.run([sys.executable, str(TESTS / "faults.py"), "length_filter", str(cfg)],
                             capture_output=True, text=True)
    assert crashed.returncode == CRASH_EXIT, crashed.stderr
    work = tmp_path / "work"
    assert (next(work.glob("length_filter-*")) / "rows" / "_SUCCESS").exists()
    assert not list(work.glob("exact_dedup-*/rows/part-*"))  # its global pass had begun, no more
    done = {p: p.stat().st_mtime_ns for p in work.glob("normalize-*/rows/part-*.parquet")}

    resumed = thresher("run", cfg)
    assert resumed.returncode == 0, resumed.stderr
    assert "normalize+length_filter: reused" in resumed.stderr
    assert {p: p.stat().st_mtime_ns for p in done} == done  # not recomputed

    fresh = _run(_pipeline(tmp_path, demo_subset, name="fresh.yaml", work_dir="work2",
                           output={"dir": "out2"}))
    assert _digests(tmp_path / "out") == _digests(fresh.output_dir)


def test_resume_inside_a_stage_recomputes_only_missing_shards(demo_subset, tmp_path):
    cfg = _pipeline(tmp_path, demo_subset)
    first = _run(cfg)
    stage = first.stage_dirs["05-softdedup"].out
    (stage / "_SUCCESS").unlink()
    victim = sorted(stage.glob("part-*.parquet"))[1]
    shard = victim.name[len("part-"):-len(".parquet")]
    victim.unlink()
    (stage / "_stats" / f"{shard}.json").unlink()
    others = {p: p.stat().st_mtime_ns for p in stage.glob("part-*.parquet")}
    second = _run(cfg)
    assert victim.exists()
    assert {p: p.stat().st_mtime_ns for p in others} == others
    assert _digests(first.output_dir) == _digests(second.output_dir)


def test_tampered_work_dir_fails_loudly(demo_subset, tmp_path):
    cfg = _pipeline(tmp_path, demo_subset)
    first = _run(cfg)
    part = sorted(first.stage_dirs["02-length_filter"].out.glob("part-*.parquet"))[0]
    t = pq.read_table(part)
    pq.write_table(t.slice(0, t.num_rows - 1), part)
    with pytest.raises(AccountingError, match="02-length_filter"):
        _run(cfg)


def _folders(res) -> dict[str, str]:
    return {label: d.folder.name for label, d in res.stage_dirs.items()}


def _mtimes(res, label: str) -> dict:
    return {p: p.stat().st_mtime_ns for p in res.stage_dirs[label].out.glob("part-*.parquet")}


def test_a_changed_last_stage_reuses_every_earlier_checkpoint(demo_subset, tmp_path):
    first = _run(_pipeline(tmp_path, demo_subset))
    before = {label: _mtimes(first, label) for label in first.stage_dirs}
    stages = STAGES[:-1] + [{**STAGES[-1], "segments": 4}]
    changed = _run(write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": [str(demo_subset / "*.jsonl.gz")],
                   "id_column": "doc_id", "domain_column": "domain"}], stages=stages))
    a, b = _folders(first), _folders(changed)
    assert [label for label in a if a[label] != b[label]] == ["05-softdedup"]
    assert [s["run"] for s in changed.manifest["stages"]] == ["reused"] * 5 + ["computed"]
    for label in list(a)[:-1]:  # not one earlier part file was rewritten
        assert _mtimes(changed, label) == before[label]
    clean = _run(write_pipeline(tmp_path / "clean.yaml", inputs=[{"paths": [str(demo_subset / "*.jsonl.gz")],
                 "id_column": "doc_id", "domain_column": "domain"}], stages=stages, work_dir="w2",
                                output={"dir": "o2"}))
    assert _digests(changed.output_dir) == _digests(clean.output_dir)
    # Another seed changes every stage's key; --from recomputes that stage and what follows.
    other = _run(_pipeline(tmp_path, demo_subset, name="s1.yaml", seed=1, output={"dir": "o3"}))
    assert set(_folders(other).values()).isdisjoint(set(b.values()) - {b["00-ingest"]})
    dedup_before = _mtimes(changed, "03-exact_dedup")
    with pytest.raises(ConfigError, match="no stage 'exact_dedupe' in this pipeline"):
        _run(tmp_path / "p.yaml", from_stage="exact_dedupe")
    again = _run(tmp_path / "p.yaml", from_stage="exact_dedup")
    assert [s["run"] for s in again.manifest["stages"]] == ["reused"] * 3 + ["computed"] * 3
    assert _mtimes(again, "02-length_filter") == before["02-length_filter"]
    assert _mtimes(again, "03-exact_dedup").keys() == dedup_before.keys()
    assert all(_mtimes(again, "03-exact_dedup")[p] != t for p, t in dedup_before.items())
    assert _digests(again.output_dir) == _digests(clean.output_dir)


def test_same_seed_gives_byte_identical_shards_on_ray(demo_subset, tmp_path, ray_session):
    one = _run(_pipeline(tmp_path, demo_subset, "a.yaml", work_dir="wa", output={"dir": "oa"}), RayExecutor())
    two = _run(_pipeline(tmp_path, demo_subset, "b.yaml", work_dir="wb", output={"dir": "ob"}), RayExecutor())
    inline = _run(_pipeline(tmp_path, demo_subset, "c.yaml", work_dir="wc", output={"dir": "oc"}))
    assert one.manifest["versions"]["executor"] == "ray"
    assert _digests(one.output_dir) == _digests(two.output_dir) == _digests(inline.output_dir)
    assert len(_digests(one.output_dir)) > 1


def test_output_loads_with_datasets(demo_subset, tmp_path):
    datasets = pytest.importorskip("datasets")
    res = _run(_pipeline(tmp_path, demo_subset))
    ds = datasets.load_dataset("parquet", data_files=str(res.output_dir / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf_cache"))
    assert ds.num_rows == res.manifest["output"]["rows"]
    assert {"id", "text", "weight", "group", "domain"} <= set(ds.column_names)
    rej = datasets.load_dataset("parquet", data_files=str(res.output_dir / "rejected" / "*" / "*.parquet"),
                                split="train", cache_dir=str(tmp_path / "hf_cache"))
    assert rej.num_rows == res.manifest["totals"]["rejected_total"]


def test_output_dir_that_is_not_ours_is_refused(demo_subset, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        _run(_pipeline(tmp_path, demo_subset))


class _Deleter(Stage):
    name = "deleter_for_test"

    def transform(self, table, state=None):
        return table.slice(1)


def test_a_stage_that_deletes_rows_breaks_the_contract():
    table = pa.table({"text": ["a", "b"]})
    with pytest.raises(StageContractError, match="must mark rows"):
        apply_stage(_Deleter(), table, None, 10)


class _Shouter(Stage):
    name = "shouter_for_test"  # rewrites text without declaring it

    def transform(self, table, state=None):
        import pyarrow.compute as pc

        return table.set_column(0, "text", pc.utf8_upper(table["text"]))


class _Vague(Stage):
    name = "vague_for_test"
    drop_reasons = ("too_short",)

    def transform(self, table, state=None):
        return mark_dropped(table, [True, False], "no_reason_given")


def test_a_stage_that_drops_with_an_undeclared_reason_breaks_the_contract():
    """Every reason a stage can give is in its declared contract (and so in `thresher stages`)."""
    with pytest.raises(StageContractError, match=r"reason\(s\) \['no_reason_given'\] that it does not declare"):
        apply_stage(_Vague(), pa.table({"text": ["a", "b"]}), None, 10)


def test_a_stage_that_changes_an_undeclared_column_breaks_the_contract():
    """Its checkpoint would keep only declared outputs: the change would be lost, so it is an error."""
    with pytest.raises(StageContractError, match=r"changed or dropped column\(s\) \['text'\]"):
        apply_stage(_Shouter(), pa.table({"text": ["a", "b"], "id": ["1", "2"]}), None, 10)


def test_contract_errors_surface_from_tasks(demo_subset, tmp_path, monkeypatch):
    monkeypatch.setitem(registry._STAGES, _Deleter.name, _Deleter)
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": [str(demo_subset / "mirror.jsonl.gz")]}],
                       stages=[{"stage": _Deleter.name}])
    with pytest.raises(TaskFailed, match="never delete them"):
        _run(p)


def test_global_pass_stages_start_segments(demo_subset, tmp_path):
    cfg = load_config(_pipeline(tmp_path, demo_subset))
    assert plan_segments(cfg.stages) == [[1, 2], [3], [4], [5]]


def test_segments_are_cut_where_resources_differ(tmp_path, monkeypatch):
    """A CPU filter after a GPU scorer runs in plain tasks of its own, not inside the scorer's actors."""
    monkeypatch.setitem(registry._STAGES, _Upper.name, _Upper)
    stages = [{"stage": "normalize"}, {"stage": _Upper.name}, {"stage": "ref_perplexity", "model": "m",
                                                               "device": "cuda"},
              {"stage": "length_filter"}, {"stage": "normalize", "form": "NFC"}]
    cfg = load_config(write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["x"]}], stages=stages))
    assert plan_segments(cfg.stages) == [[1], [2], [3], [4, 5]]
    assert [cfg.stages[i - 1].resources for i in (2, 3, 4)] == [
        Resources(memory_gb=0.05), Resources(cpus=1.0, gpus=1.0), Resources()]


class _Upper(Stage):
    """A stage with resources of its own (as a model-loading stage has): runs in a worker pool of its own."""

    name = "upper_for_test"
    outputs = ("text",)  # it rewrites text
    resources = Resources(memory_gb=0.05)  # memory is reserved from Ray's scheduler

    def setup(self):
        self.loaded = True

    def transform(self, table, state=None):
        import pyarrow.compute as pc

        assert self.loaded
        return table.set_column(table.column_names.index("text"), "text", pc.utf8_upper(table["text"]))


def test_a_stage_with_its_own_resources_runs_in_its_own_worker_pool(demo_subset, tmp_path, monkeypatch, ray_session):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/
    monkeypatch.setitem(registry._STAGES, _Upper.name, _Upper)
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": [str(demo_subset / "mirror.jsonl.gz")]}],
                       stages=[{"stage": _Upper.name}], shard_rows=40)
    res = _run(p, RayExecutor())
    out = pq.read_table(res.output_dir / "data")
    assert out.num_rows == res.manifest["totals"]["rows_in"] > 100
    assert all(t == t.upper() for t in out["text"].to_pylist())


def test_a_saved_state_of_another_record_version_is_recomputed(demo_subset, tmp_path, monkeypatch):
    from thresher.stages.exact_dedup import Winners

    cfg = _pipeline(tmp_path, demo_subset)
    first = _run(cfg)
    stage = first.stage_dirs["03-exact_dedup"]
    written = stage.state.stat().st_mtime_ns
    (stage.out / "_SUCCESS").unlink()  # the stage must be looked at again
    _run(cfg)
    assert stage.state.stat().st_mtime_ns == written  # same record version: reused
    (stage.out / "_SUCCESS").unlink()
    monkeypatch.setattr(Winners, "VERSION", Winners.VERSION + 1)
    again = _run(cfg)
    assert stage.state.stat().st_mtime_ns != written  # the code reads another version: recomputed
    assert again.manifest["output"] == first.manifest["output"]


def test_a_global_pass_must_return_its_declared_record(demo_subset, tmp_path, monkeypatch):
    from thresher.stages.exact_dedup import ExactDedup

    monkeypatch.setattr(ExactDedup, "fit", lambda self, ctx: {"winners": "somewhere"})
    with pytest.raises(StageContractError, match="returned a dict, not its declared State record Winners"):
        _run(_pipeline(tmp_path, demo_subset))
    with pytest.raises(TypeError, match="declares no State record"):
        registry.register(type("NoRecord", (Stage,), {"name": "no_record_for_test",
                                                      "partial": lambda self, table: 0}))


def test_gc_lists_then_removes_only_what_no_given_pipeline_points_to(demo_subset, tmp_path):
    a = _run(_pipeline(tmp_path, demo_subset))
    b = _run(_pipeline(tmp_path, demo_subset, name="b.yaml", seed=3, output={"dir": "ob"}))
    work = tmp_path / "work"
    everything = sorted(p.name for p in work.iterdir())
    dry = thresher("gc", work, tmp_path / "p.yaml")
    assert dry.returncode == 0, dry.stderr
    assert sorted(p.name for p in work.iterdir()) == everything  # a dry run removes nothing
    only_b = {d.folder.name for d in b.stage_dirs.values()} - {d.folder.name for d in a.stage_dirs.values()}
    assert len(only_b) == 5 and all(f"would remove {work / name} " in dry.stdout for name in only_b)
    assert "rerun with --yes" in dry.stdout
    done = thresher("gc", work, tmp_path / "p.yaml", "--yes")
    assert done.returncode == 0, done.stderr
    left = {p.name for p in work.iterdir()}
    assert left.isdisjoint(only_b) and {d.folder.name for d in a.stage_dirs.values()} <= left
    assert [p.name for p in (work / "runs").iterdir()] == [f"{a.stage_dirs['05-softdedup'].key}.json"]
    assert _run(_pipeline(tmp_path, demo_subset)).manifest["stages"][-1]["run"] == "reused"
    nothing = thresher("gc", work, tmp_path / "p.yaml")
    assert "nothing to remove" in nothing.stdout


def test_checkpoints_hold_one_copy_of_the_rows_not_one_per_stage(demo_subset, tmp_path):
    """Ingest writes the rows; every later stage stores its kept rows' positions and the columns it
    adds (normalize: the rewritten text), so the work dir holds under 3x the output's Parquet bytes
    (state tables such as softdedup's counts aside), and a global pass reads just its columns."""
    res = _run(_pipeline(tmp_path, demo_subset))
    rows = sum(p.stat().st_size for p in res.work_dir.glob("*/rows/*.parquet"))
    rejected = sum(p.stat().st_size for p in res.work_dir.glob("*/rejected/*.parquet"))
    output = sum(p.stat().st_size for p in (res.output_dir / "data").glob("*.parquet"))
    assert (rows + rejected) <= 3 * output, (rows, rejected, output)
    for label in ("02-length_filter", "04-minhash_dedup"):  # no text stored: positions and new columns
        assert "text" not in pq.read_schema(next(res.stage_dirs[label].out.glob("part-*.parquet"))).names
    assert res.rows("05-softdedup").num_rows == res.manifest["output"]["rows"]


class _ModelThatFailsToLoad:
    def setup(self):
        raise OSError("cannot read model /models/harm.bin (not a KenLM file)")

    def __call__(self, item):
        return item


def test_a_setup_error_comes_back_as_the_tasks_own_error(ray_session):
    """A model that fails to load in a worker is reported with its message, not as a dead worker."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/
    executor = RayExecutor()
    try:
        with pytest.raises(TaskFailed, match=r"cannot read model /models/harm\.bin") as failed:
            list(executor.map(_ModelThatFailsToLoad(), [1, 2, 3]))
        assert failed.value.kind == "OSError"
    finally:
        executor.close()


class _SleepThenPid:
    def setup(self):
        pass

    def __call__(self, seconds):
        import time

        time.sleep(seconds)
        return os.getpid()


def test_a_maps_last_items_go_to_a_free_worker_not_behind_a_busy_one(ray_session):
    """Two workers, one long item first: the short items after it all run on the other worker
    (queued two deep, the third item would wait out the long one while a worker idles)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    executor = RayExecutor()
    try:
        pids = list(executor.map(_SleepThenPid(), [3.0, 0.05, 0.05, 0.05]))
    finally:
        executor.close()
    assert len(set(pids)) == 2
    assert pids[0] not in pids[1:], pids
