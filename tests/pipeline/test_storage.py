"""Inputs in object storage, against a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import DEMO_DATA, REPO, demo_texts, thresher, write_pipeline
from object_store import free_port, s3_server
from thresher.pipeline.core import storage
from thresher.pipeline.core.files import InputError
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor
from thresher.pipeline.engine.lock import LockHeld, RunLock
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner

FILES = ("scripture.jsonl.gz", "mirror.jsonl.gz", "python_docs.jsonl.gz")
STAGES = [{"stage": "normalize"}, {"stage": "length_filter", "min_words": 5}, {"stage": "exact_dedup"},
          {"stage": "minhash_dedup", "threshold": 0.8}]


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        client = server.client()
        client.create_bucket(Bucket="corpus")
        for name in FILES:
            client.upload_file(str(DEMO_DATA / name), "corpus", f"raw/{name}")
        client.upload_file(str(DEMO_DATA / "fortunes.jsonl.gz"), "corpus", "raw/more/fortunes.jsonl.gz")
        yield server


@pytest.fixture
def s3_env(s3, monkeypatch):
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    storage._remote_fs.cache_clear()  # the filesystem is built from the environment once per process
    yield s3
    storage._remote_fs.cache_clear()


def test_globs_list_objects_as_they_list_files(s3_env):
    flat = storage.glob("s3://corpus/raw/*.jsonl.gz")
    assert [m.path for m in flat] == [f"s3://corpus/raw/{n}" for n in sorted(FILES)]
    assert [m.size for m in flat] == [(DEMO_DATA / n).stat().st_size for n in sorted(FILES)]
    assert all(m.mtime_ns > 0 for m in flat)
    deep = storage.glob("s3://corpus/raw/**/*.jsonl.gz")
    assert len(deep) == 4 and "s3://corpus/raw/more/fortunes.jsonl.gz" in [m.path for m in deep]
    assert [m.path for m in storage.glob("s3://corpus/raw/mirror.jsonl.gz")] == ["s3://corpus/raw/mirror.jsonl.gz"]
    assert storage.glob("s3://corpus/raw/*.parquet") == []


def test_a_slice_of_an_npy_object_is_a_ranged_read(s3_env, tmp_path):
    """load_npy_slice reads rows [a, b) of a stored array, from disk and from an object store alike."""
    import numpy as np

    array = np.arange(1000, dtype=np.int64) * 7
    remote, local = storage.ObjectPath("s3://corpus/npy/a.npy"), tmp_path / "a.npy"
    storage.save_npy(remote, array)
    storage.save_npy(local, array)
    for a, b in ((0, 10), (123, 456), (990, 2000), (5, 5)):
        for path in (remote, local):
            assert storage.load_npy_slice(path, a, b).tolist() == array[a:b].tolist()


def _rows(out) -> pa.Table:
    table = pq.read_table(out / "data").drop_columns(["source"])
    return table.sort_by("id")


def _pipeline(tmp_path, name, paths, **fields):
    inputs = [{"paths": paths, "id_column": "doc_id", "domain_column": "domain"}]
    return write_pipeline(tmp_path / f"{name}.yaml", inputs=inputs, stages=STAGES, work_dir=f"work-{name}",
                          output={"dir": f"out-{name}"}, **fields)


def test_a_run_reads_its_inputs_from_s3_as_from_disk(tmp_path, s3_env):
    local = tmp_path / "data"
    local.mkdir()
    for name in FILES:
        (local / name).write_bytes((DEMO_DATA / name).read_bytes())
    on_disk = Runner(load_config(_pipeline(tmp_path, "disk", ["data/*.jsonl.gz"])), progress=Progress(False)).run()
    remote = Runner(load_config(_pipeline(tmp_path, "s3", ["s3://corpus/raw/*.jsonl.gz"])),
                    progress=Progress(False)).run()
    assert remote.manifest["totals"] == on_disk.manifest["totals"]
    assert _rows(remote.output_dir).equals(_rows(on_disk.output_dir))
    sources = set(pq.read_table(remote.output_dir / "data", columns=["source"])["source"].to_pylist())
    assert sources <= {f"s3://corpus/raw/{n}" for n in FILES} and len(sources) >= 2
    text = (remote.output_dir / "manifest.json").read_text()
    assert "testing" not in text  # the credentials never reach the manifest


@pytest.mark.slow  # a Ray of its own; the default suite has Ray workers reading S3 in the kill test below
def test_the_ray_executor_reads_s3_through_the_cli(tmp_path, s3_env):
    p = _pipeline(tmp_path, "ray", ["s3://corpus/raw/*.jsonl.gz"], executor="ray", ray={"num_cpus": 2})
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "thresher.pipeline.commands.cli", "run", str(p), "-q"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    inline = Runner(load_config(_pipeline(tmp_path, "inline", ["s3://corpus/raw/*.jsonl.gz"])),
                    progress=Progress(False)).run()
    assert _rows(tmp_path / "out-ray").equals(_rows(inline.output_dir))


def test_changing_an_object_changes_the_ingest_key(tmp_path, s3_env):
    cfg = load_config(_pipeline(tmp_path, "key", ["s3://corpus/raw/mirror.jsonl.gz"]))
    before = cfg.input_files()[0]
    s3_env.client().put_object(Bucket="corpus", Key="raw/mirror.jsonl.gz",
                               Body=(DEMO_DATA / "scripture.jsonl.gz").read_bytes())
    after = cfg.input_files()[0]
    s3_env.client().upload_file(str(DEMO_DATA / "mirror.jsonl.gz"), "corpus", "raw/mirror.jsonl.gz")
    assert (before[0].size, before[0].mtime_ns) != (after[0].size, after[0].mtime_ns)


def test_a_missing_bucket_or_prefix_is_named(tmp_path, s3_env):
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"s3://no-such-bucket/raw/\*\.jsonl\.gz.*bucket"):
        Runner(load_config(_pipeline(tmp_path, "nob", ["s3://no-such-bucket/raw/*.jsonl.gz"])),
               progress=Progress(False)).run()
    assert not (tmp_path / "work-nob").exists() and not (tmp_path / "out-nob").exists()  # nothing written
    with pytest.raises(InputError, match=r"'s3://corpus/nothing/\*\.jsonl' matched no objects"):
        load_config(_pipeline(tmp_path, "nop", ["s3://corpus/nothing/*.jsonl"])).input_files()
    assert time.monotonic() - t0 < 30


def _refused_fast(tmp_path, name: str, message: str) -> None:
    """A run over s3://corpus/raw/*.jsonl.gz stops within 30 s with an InputError matching
    `message`, and writes nothing."""
    storage._remote_fs.cache_clear()  # the filesystem is built from the environment just changed
    t0 = time.monotonic()
    try:
        with pytest.raises(InputError, match=message):
            Runner(load_config(_pipeline(tmp_path, name, ["s3://corpus/raw/*.jsonl.gz"])),
                   progress=Progress(False)).run()
    finally:
        storage._remote_fs.cache_clear()
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / f"work-{name}").exists() and not (tmp_path / f"out-{name}").exists()


def test_an_unreachable_endpoint_fails_fast_naming_the_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    _refused_fast(tmp_path, "down", r"s3://corpus/raw/\*\.jsonl\.gz.*AWS_ENDPOINT_URL")


def test_wrong_credentials_are_named(tmp_path, monkeypatch):
    with s3_server(enforce_auth=True) as strict:
        for key, value in strict.env().items():
            monkeypatch.setenv(key, value)
        _refused_fast(tmp_path, "creds", r"s3://corpus/raw/\*\.jsonl\.gz.*refused the credentials")


# Every kind of global pass, over two input files (1,249 rows in two shards, exact and near copies
# among them) and softdedup with 4 key partitions: each object costs the test server about 10 ms.
WHOLE = [{"stage": "normalize"}, {"stage": "fedrw"}, {"stage": "exact_dedup"},
         {"stage": "minhash_dedup", "threshold": 0.8}, {"stage": "softdedup", "segments": 5, "partitions": 4}]


def _digests(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "data").glob("*.parquet"))}


def _whole(tmp_path, name, work, **fields):
    inputs = [{"paths": ["s3://corpus/raw/mirror.jsonl.gz", "s3://corpus/raw/python_docs.jsonl.gz"],
               "id_column": "doc_id", "domain_column": "domain"}]
    return write_pipeline(tmp_path / f"{name}.yaml", inputs=inputs, stages=WHOLE, work_dir=work,
                          output={"dir": f"out-{name}"}, **{"shard_rows": 2000, **fields})


def test_a_work_dir_in_s3_gives_the_output_of_a_local_one(tmp_path, s3_env):
    """Every stage's checkpoints, its global pass's scratch and state, and the staged output live
    in the bucket; the output equals a run with a local work dir, byte for byte."""
    local = Runner(load_config(_whole(tmp_path, "local", "work-local")), progress=Progress(False)).run()
    remote = Runner(load_config(_whole(tmp_path, "remote", "s3://corpus/work/w1")), progress=Progress(False)).run()
    assert _digests(remote.output_dir) == _digests(local.output_dir)
    assert remote.manifest["totals"] == local.manifest["totals"]
    work = _objects(s3_env, "work/w1/")
    assert any(k.startswith("minhash_dedup-") and k.endswith("/state/state.pkl") for k in work)
    assert any(k.startswith("softdedup-") and "/rows/_stats/" in k for k in work)
    left = [k for k in work if "/scratch/" in k or k.startswith(".thresher/outputs/")]
    assert not left, left[:10]  # cleared
    assert ".thresher/lock" not in work  # the lease goes with the run
    # A changed parameter recomputes only its stage; gc then lists the old one.
    p = _whole(tmp_path, "remote", "s3://corpus/work/w1")
    cfg = yaml.safe_load(p.read_text())
    cfg["stages"][-1]["segments"] = 4
    p.write_text(yaml.safe_dump(cfg))
    again = Runner(load_config(p), progress=Progress(False)).run()
    assert [s["run"] for s in again.manifest["stages"]] == ["reused"] * 5 + ["computed"]
    gc = thresher("gc", "s3://corpus/work/w1", p)
    assert gc.returncode == 0, gc.stderr[-2000:]
    assert "would remove s3://corpus/work/w1/softdedup-" in gc.stdout and "rerun with --yes" in gc.stdout
    gc = thresher("gc", "s3://corpus/work/w1", p, "--yes")
    assert gc.returncode == 0, gc.stderr[-2000:]
    assert len({k.split("/")[0] for k in _objects(s3_env, "work/w1/") if k.startswith("softdedup-")}) == 1


def test_a_run_on_an_s3_work_dir_resumes_and_a_second_run_is_refused(tmp_path, s3_env):
    from faults import CRASH_EXIT

    p = _whole(tmp_path, "crash", "s3://corpus/work/w2")
    crashed = subprocess.run([sys.executable, str(REPO / "tests" / "faults.py"), "minhash_dedup", str(p)],
                             capture_output=True, text=True, timeout=300)
    assert crashed.returncode == CRASH_EXIT, crashed.stderr[-2000:]
    # The dead run's lease is still fresh: a run now is told who holds the work dir.
    t0 = time.monotonic()
    with pytest.raises(LockHeld, match=r"work dir s3://corpus/work/w2 is in use by pid \d+ .*frees it 60 s"):
        Runner(load_config(p), progress=Progress(False)).run()
    assert time.monotonic() - t0 < 30
    s3_env.client().delete_object(Bucket="corpus", Key="work/w2/.thresher/lock")  # as if 60 s had passed
    resumed = Runner(load_config(p), progress=Progress(False)).run()
    assert [s["run"] for s in resumed.manifest["stages"]] == ["reused"] * 5 + ["computed"]
    clean = Runner(load_config(_whole(tmp_path, "clean", "work-clean")), progress=Progress(False)).run()
    assert _digests(resumed.output_dir) == _digests(clean.output_dir)
    # Two live runs: the second stops with the first one's name and leaves its work alone.
    with RunLock(storage.ObjectPath("s3://corpus/work/w2/.thresher/lock"), "work dir s3://corpus/work/w2", "k"):
        with pytest.raises(LockHeld, match=rf"in use by pid {os.getpid()}"):
            Runner(load_config(p), progress=Progress(False)).run()
    assert Runner(load_config(p), progress=Progress(False)).run().manifest["totals"] == clean.manifest["totals"]


def test_ray_workers_write_to_s3_and_a_worker_killed_mid_write_loses_nothing(tmp_path, s3_env):
    p = _whole(tmp_path, "ray", "s3://corpus/work/w3", executor="ray", ray={"num_cpus": 2})
    cfg = yaml.safe_load(p.read_text())
    cfg["output"]["dir"] = "s3://corpus/out/ray"
    p.write_text(yaml.safe_dump(cfg))
    marker = tmp_path / "killed"
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "faults.py"), "--kill-worker", str(marker), str(p)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.exists()  # a worker did die after writing a shard, before reporting it
    reference = Runner(load_config(_whole(tmp_path, "ref", "work-ref")), progress=Progress(False)).run()
    objects = _objects(s3_env, "out/ray/")
    assert {k[len("data/"):]: v for k, v in objects.items() if k.startswith("data/")} == _digests(reference.output_dir)
    assert json.loads(objects["manifest.json"])["totals"] == reference.manifest["totals"]


def _objects(server, prefix: str) -> dict[str, bytes]:
    client = server.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="corpus", Prefix=prefix)
            for o in page.get("Contents", []) if not o["Key"].endswith("/")]  # not pyarrow's folder markers
    return {k[len(prefix):]: client.get_object(Bucket="corpus", Key=k)["Body"].read() for k in keys}


def test_an_output_in_s3_holds_what_a_local_output_holds_with_the_manifest_last(tmp_path, s3_env, monkeypatch):
    paths = ["s3://corpus/raw/*.jsonl.gz"]
    local = Runner(load_config(_pipeline(tmp_path, "local", paths)), progress=Progress(False)).run()
    p = _pipeline(tmp_path, "remote", paths)
    remote = Runner(load_config(p), progress=Progress(False), output_dir="s3://corpus/out/v").run()
    assert remote.output_uri == "s3://corpus/out/v"
    objects = _objects(s3_env, "out/v/")
    for f in sorted((local.output_dir / "data").glob("*.parquet")):
        assert objects[f"data/{f.name}"] == f.read_bytes()
    assert json.loads(objects["manifest.json"])["totals"] == local.manifest["totals"]
    assert any(k.startswith("rejected/") for k in objects)

    # An upload that dies half-way leaves no manifest: readers see no output rather than a mix.
    s3_env.client().put_object(Bucket="corpus", Key="out/v/data/part-stale.parquet", Body=b"old")
    real, calls = storage.pafs.copy_files, []

    def dies_on_the_third_file(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise OSError("connection reset during upload")
        return real(*args, **kwargs)

    monkeypatch.setattr(storage.pafs, "copy_files", dies_on_the_third_file)
    with pytest.raises(storage.StorageAccessError, match="s3://corpus/out/v/.*connection reset"):
        Runner(load_config(p), progress=Progress(False), output_dir="s3://corpus/out/v", from_stage="minhash_dedup").run()
    assert "manifest.json" not in _objects(s3_env, "out/v/")
    monkeypatch.setattr(storage.pafs, "copy_files", real)
    again = Runner(load_config(p), progress=Progress(False), output_dir="s3://corpus/out/v").run()  # resumes
    objects = _objects(s3_env, "out/v/")
    assert "data/part-stale.parquet" not in objects  # what the new output lacks is gone
    assert json.loads(objects["manifest.json"])["totals"] == local.manifest["totals"]
    assert [s["run"] for s in again.manifest["stages"]] == ["reused"] * len(again.manifest["stages"])


def test_a_prefix_holding_other_objects_is_not_overwritten(tmp_path, s3_env):
    s3_env.client().put_object(Bucket="corpus", Key="theirs/report.csv", Body=b"a,b\n")
    with pytest.raises(storage.StorageAccessError, match="s3://corpus/theirs: holds objects but no Thresher output"):
        Runner(load_config(_pipeline(tmp_path, "theirs", ["s3://corpus/raw/mirror.jsonl.gz"])),
               progress=Progress(False), output_dir="s3://corpus/theirs").run()
    assert _objects(s3_env, "theirs/") == {"report.csv": b"a,b\n"}


def test_dedup_indexes_in_s3_serve_a_later_run(tmp_path, s3_env):
    """Both dedup stages write their index to a prefix; a later run (its own corpus, local) names
    the prefixes in `against` and removes its copies of the earlier run's documents."""
    stages = [{"stage": "exact_dedup", "index": "s3://corpus/indexes/exact"},
              {"stage": "minhash_dedup", "index": "s3://corpus/indexes/minhash"}]
    first = write_pipeline(tmp_path / "first.yaml", inputs=[{"paths": ["s3://corpus/raw/scripture.jsonl.gz"],
                                                             "id_column": "doc_id"}],
                           stages=stages, work_dir="work-first", output={"dir": "out-first"}, executor="inline")
    Runner(load_config(first), progress=Progress(False)).run()
    assert {"exact/index.json", "minhash/index.json"} <= set(_objects(s3_env, "indexes/"))
    old = [t for t in demo_texts("scripture", 200) if len(t.split()) > 40][:10]
    rows = [{"id": f"x{i}", "text": t} for i, t in enumerate(old[:5])]  # exact copies
    rows += [{"id": f"y{i}", "text": t + " amen"} for i, t in enumerate(old[5:])]  # near copies
    rows += [{"id": f"z{i}", "text": f"a document of this run only, number {i} " * 8} for i in range(5)]
    (tmp_path / "new.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    second = write_pipeline(tmp_path / "second.yaml", inputs=[{"paths": ["new.jsonl"], "id_column": "id"}],
                            stages=[{"stage": "exact_dedup", "against": ["s3://corpus/indexes/exact"]},
                                    {"stage": "minhash_dedup", "against": ["s3://corpus/indexes/minhash"]}],
                            work_dir="work-second", output={"dir": "out-second"}, executor="inline")
    res = Runner(load_config(second), progress=Progress(False)).run()
    assert [st["rejected"] for st in res.manifest["stages"][1:]] == [
        {"duplicate_of_earlier": 5}, {"duplicate_of_earlier": 5}]
    assert sorted(pq.read_table(res.output_dir / "data")["id"].to_pylist()) == [f"z{i}" for i in range(5)]


def test_file_uris_are_local_paths(tmp_path):
    p = write_pipeline(tmp_path / "f.yaml", inputs=[{"paths": [f"file://{DEMO_DATA}/mirror.jsonl.gz"]}])
    files, _ = load_config(p).input_files()
    assert [f.path for f in files] == [str(DEMO_DATA / "mirror.jsonl.gz")]
    assert yaml.safe_load(p.read_text())["inputs"][0]["paths"][0].startswith("file://")


# --- files that stages load by path ------------------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_objects_and_prefixes_are_fetched_once_per_version(s3_env, cache, monkeypatch):
    client = s3_env.client()
    client.put_object(Bucket="corpus", Key="models/tok/vocab.json", Body=b'{"a": 1}')
    client.put_object(Bucket="corpus", Key="models/tok/sub/merges.txt", Body=b"a b\n")
    client.put_object(Bucket="corpus", Key="models/lm.bin", Body=b"x" * 1000)
    fetches = []
    real = storage.pafs.copy_files
    monkeypatch.setattr(storage.pafs, "copy_files", lambda *a, **k: (fetches.append(a[0]), real(*a, **k)))

    with ThreadPoolExecutor(4) as pool:  # four workers of one node ask at once
        paths = list(pool.map(storage.cached_copy, ["s3://corpus/models/tok"] * 4))
    assert len(set(paths)) == 1 and len(fetches) == 1
    folder = paths[0]
    assert folder.startswith(str(cache)) and folder.endswith("/tok")
    assert open(f"{folder}/vocab.json").read() == '{"a": 1}' and open(f"{folder}/sub/merges.txt").read() == "a b\n"
    lm = storage.cached_copy("s3://corpus/models/lm.bin")
    assert lm.endswith("/lm.bin") and open(lm, "rb").read() == b"x" * 1000
    assert storage.cached_copy("s3://corpus/models/lm.bin") == lm and len(fetches) == 2
    client.put_object(Bucket="corpus", Key="models/lm.bin", Body=b"y" * 999)  # a new version: fetched anew
    fresh = storage.cached_copy("s3://corpus/models/lm.bin")
    assert fresh != lm and open(fresh, "rb").read() == b"y" * 999 and len(fetches) == 3
    assert storage.cached_copy("/a/local/path") == "/a/local/path"
    with pytest.raises(storage.StorageAccessError, match="s3://corpus/models/missing.bin: no such object"):
        storage.cached_copy("s3://corpus/models/missing.bin")


@pytest.fixture
def kenlm_model(harmful_kenlm):
    """A small KenLM model (.bin and .arpa): conftest's, trained by `thresher train-kenlm`."""
    return harmful_kenlm.binary, harmful_kenlm.arpa


def test_a_stage_model_in_s3_scores_as_the_same_model_on_disk(tmp_path, s3_env, cache, kenlm_model):
    binary, arpa = kenlm_model
    s3_env.client().upload_file(str(binary), "corpus", "models/harm.bin")

    def run(name, model):
        stages = [{"stage": "harmful_filter", "model": model, "action": "flag"}]
        p = write_pipeline(tmp_path / f"{name}.yaml", inputs=[{"paths": ["s3://corpus/raw/mirror.jsonl.gz"],
                                                               "id_column": "doc_id"}],
                           stages=stages, work_dir="work", output={"dir": f"out-{name}"})
        return Runner(load_config(p), progress=Progress(False)).run()

    on_disk = run("disk", str(binary))
    remote = run("s3", "s3://corpus/models/harm.bin")
    scores = lambda r: pq.read_table(r.output_dir / "data", columns=["id", "harm_ppl"]).sort_by("id")  # noqa: E731
    assert scores(remote).equals(scores(on_disk))
    assert remote.manifest["stages"][1]["run"] == "computed"
    again = run("s3", "s3://corpus/models/harm.bin")  # unchanged object: the stage's checkpoint is reused
    assert again.manifest["stages"][1]["run"] == "reused"
    s3_env.client().upload_file(str(arpa), "corpus", "models/harm.bin")  # replaced
    assert run("s3", "s3://corpus/models/harm.bin").manifest["stages"][1]["run"] == "computed"


@pytest.mark.slow  # a head and a worker node of their own (ray start)
def test_submit_ships_only_the_config_and_the_cluster_reads_and_writes_s3(tmp_path, s3_env, cache, kenlm_model):
    from local_cluster import LocalCluster  # started after s3_env and cache: its nodes see the same environment

    stages = STAGES[:3] + [{"stage": "harmful_filter", "model": "s3://corpus/models/job.bin", "action": "flag",
                            "tau_method": "given", "tau": 1000.0}]
    s3_env.client().upload_file(str(kenlm_model[0]), "corpus", "models/job.bin")
    p = write_pipeline(tmp_path / "job.yaml", inputs=[{"paths": ["s3://corpus/raw/*.jsonl.gz"],
                                                       "id_column": "doc_id", "domain_column": "domain"}],
                       stages=stages, executor="ray")
    local = Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False),  # the reference
                   output_dir=tmp_path / "local", work_dir=tmp_path / "local-work").run()
    ray_dir = tmp_path.parent / f"r{os.getpid()}"  # unix socket paths must stay short
    with LocalCluster(ray_dir, workers=1) as cluster:
        proc = subprocess.run([sys.executable, "-m", "thresher.pipeline.commands.cli", "submit", str(p), "--address",
                               cluster.address, "--wait", "-o", "s3://corpus/out/job", "--work-dir",
                               "s3://corpus/work/job"], capture_output=True, text=True, timeout=600,
                              env=cluster.env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "cluster-work").exists()
    assert any(k.endswith("/state/state.pkl") for k in _objects(s3_env, "work/job/"))  # no shared work dir either
    objects = _objects(s3_env, "out/job/")
    for f in sorted((local.output_dir / "data").glob("*.parquet")):
        assert objects[f"data/{f.name}"] == f.read_bytes()
    assert json.loads(objects["manifest.json"])["totals"] == local.manifest["totals"]
    data = load_config(p).portable()  # what the job ships
    assert data["inputs"][0]["paths"] == ["s3://corpus/raw/*.jsonl.gz"]
    assert data["stages"][-1]["model"] == "s3://corpus/models/job.bin"
    assert "testing" not in yaml.safe_dump(data)  # no credentials travel with the job


def test_inputs_never_include_the_runs_own_prefixes(tmp_path, s3_env):
    client = s3_env.client()
    client.upload_file(str(DEMO_DATA / "mirror.jsonl.gz"), "corpus", "mixed/raw/mirror.jsonl.gz")
    client.put_object(Bucket="corpus", Key="mixed/work/ingest-0123456789abcdef/stray.jsonl.gz",
                      Body=(DEMO_DATA / "mirror.jsonl.gz").read_bytes())
    cfg = load_config(_pipeline(tmp_path, "own", ["s3://corpus/mixed/**/*.jsonl.gz"]))
    files, skipped = cfg.input_files(exclude=("s3://corpus/mixed/work", str(tmp_path / "out")))
    assert [f.path for f in files] == ["s3://corpus/mixed/raw/mirror.jsonl.gz"]
    assert skipped == {"s3://corpus/mixed/work": 1}


def test_the_commands_that_read_and_write_files_take_uris(tmp_path, s3_env, cache):
    """train-kenlm, report and export read from and write to the bucket as they do to disk."""
    from thresher.scorers.tokenizer import train_bpe_tokenizer

    def cli(*args):
        proc = thresher(*args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    pytest.importorskip("kenlm")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in demo_texts("fortunes", 2000)))
    s3_env.client().upload_file(str(corpus), "corpus", "text/c.jsonl")
    cli("train-kenlm", "s3://corpus/text/c.jsonl", "-o", "s3://corpus/models/cli/lm", "--order", "3")
    models = _objects(s3_env, "models/cli/")
    assert set(models) == {"lm.arpa", "lm.bin"} and b"\\data\\" in models["lm.arpa"][:20]

    p = _pipeline(tmp_path, "cmds", ["s3://corpus/raw/mirror.jsonl.gz"])
    Runner(load_config(p), progress=Progress(False), output_dir="s3://corpus/out/cmds").run()
    assert cli("report", "s3://corpus/out/cmds").strip() == "s3://corpus/out/cmds/report.html"
    assert b"<html" in _objects(s3_env, "out/cmds/")["report.html"][:2000].lower()

    train_bpe_tokenizer(demo_texts("mirror"), 600, tmp_path / "tok")
    for f in (tmp_path / "tok").iterdir():
        s3_env.client().upload_file(str(f), "corpus", f"tok/{f.name}")
    cli("export", "s3://corpus/out/cmds", "--tokenizer", "s3://corpus/tok", "--dest", "s3://corpus/shards/cmds",
        "--seq-len", "64")
    shards = _objects(s3_env, "shards/cmds/")
    assert shards and all(k.endswith(".parquet") or k.endswith(".json") for k in shards)
    assert sum(pq.read_table(pa.BufferReader(v)).num_rows for k, v in shards.items() if k.endswith(".parquet")) > 0
