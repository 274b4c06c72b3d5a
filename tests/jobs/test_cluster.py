"""Cluster jobs on a real local Ray cluster (head + one worker node), and fault tolerance."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import faults
from conftest import REPO, write_pipeline
from faults import KillWorkerOnce
from local_cluster import LocalCluster
from thresher.pipeline.engine.config import load_config
from thresher.pipeline.engine.executor import InlineExecutor, RayExecutor
from thresher.pipeline.engine.progress import Progress
from thresher.pipeline.engine.runner import Runner


def _digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "data").glob("*.parquet"))}


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "thresher.pipeline.commands.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.slow  # a head and a worker node of their own (ray start)
def test_submit_to_a_two_node_cluster_matches_a_local_run(tmp_path):
    demo = REPO / "configs" / "demo.yaml"
    local = Runner(load_config(demo), executor=InlineExecutor(), progress=Progress(False),
                   output_dir=tmp_path / "local", work_dir=tmp_path / "local-work").run()
    ray_dir = Path(tempfile.mkdtemp(prefix="thr", dir="/tmp"))  # unix socket paths must stay < 108 bytes
    with LocalCluster(ray_dir, workers=1) as cluster:
        env = cluster.env
        started = {p.pid for p in cluster.processes()}
        assert len(started) > 3
        proc = _cli("submit", str(demo), "--address", cluster.address, "--wait", "-o", str(tmp_path / "cluster"),
                    "--work-dir", str(tmp_path / "cluster-work"), env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        job_id = proc.stdout.strip().splitlines()[-1]
        status = _cli("status", job_id, "--address", cluster.address, env=env)
        info = json.loads(status.stdout)
        assert status.returncode == 0 and info["status"] == "SUCCEEDED"
        progress = info["progress"]  # the job's last progress record, read back from its log
        assert progress["shards_done"] == progress["shards_total"] > 0 and progress["eta_s"] == 0
        listed = _cli("list", "--address", cluster.address, env=env)
        assert job_id in listed.stdout
        logs = _cli("logs", job_id, "--address", cluster.address, env=env)
        assert "output: " in logs.stdout and "manifest:" in logs.stdout
        # A job that fails reports failure with its log tail.
        bad = write_pipeline(tmp_path / "bad.yaml", inputs=[{"paths": [str(tmp_path / "corrupt.parquet")]}],
                             executor="ray")
        (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 not really parquet")
        failed = _cli("submit", str(bad), "--address", cluster.address, "--wait", env=env)
        assert failed.returncode == 1
        assert "FAILED" in failed.stderr and "corrupt.parquet" in failed.stderr
        # The job's log ends with the same one-line error as a local run, not a Ray shutdown traceback.
        assert "error: " in failed.stderr and "Ray is not initialized" not in failed.stderr
    assert not {p.pid for p in cluster.processes()}  # only what we started, all stopped
    shutil.rmtree(ray_dir, ignore_errors=True)
    assert _digests(tmp_path / "cluster") == _digests(local.output_dir)
    manifest = json.loads((tmp_path / "cluster" / "manifest.json").read_text())
    assert manifest["totals"] == local.manifest["totals"]


def test_unreachable_cluster_is_a_clear_error(tmp_path):
    proc = _cli("list", "--address", "http://127.0.0.1:9")
    assert proc.returncode == 3
    assert "cannot reach a Ray job server at http://127.0.0.1:9" in proc.stderr


def test_a_worker_killed_mid_stage_loses_no_rows(demo_subset, tmp_path, ray_session):
    stages = [{"stage": "normalize"}, {"stage": "length_filter", "min_words": 30}]
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": [str(demo_subset / "*.jsonl.gz")],
                                                     "id_column": "doc_id"}], stages=stages, shard_rows=300)
    clean = Runner(load_config(p), executor=InlineExecutor(), progress=Progress(False),
                   output_dir=tmp_path / "clean", work_dir=tmp_path / "clean-work").run()
    marker = tmp_path / "killed-once"
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(faults)  # Ray workers cannot import tests/
    res = Runner(load_config(p), executor=KillWorkerOnce(RayExecutor(), marker), progress=Progress(False),
                 output_dir=tmp_path / "faulty", work_dir=tmp_path / "faulty-work").run()
    assert marker.exists()  # a worker process really died mid-stage
    assert res.manifest["totals"] == clean.manifest["totals"]
    assert _digests(res.output_dir) == _digests(clean.output_dir)
    assert pq.read_table(res.output_dir / "data").num_rows == clean.manifest["output"]["rows"]


def test_runtime_wheel_has_no_requirements_and_installs_offline(tmp_path):
    import zipfile

    from thresher.jobs.package import build_runtime_wheel

    wheel = build_runtime_wheel(tmp_path / "w")
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith("METADATA"))).decode()
    assert "Requires-Dist" not in meta and "Name: thresher" in meta
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                           "--target", str(tmp_path / "site"), str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "thresher" / "pipeline" / "engine" / "runner.py").exists()
    assert (tmp_path / "site" / "thresher" / "configs" / "demo.yaml").exists()
    # `thresher demo` needs no checkout: the corpus and the harmful sample are package data.
    assert (tmp_path / "site" / "thresher" / "demo_data" / "scripture.jsonl.gz").exists()
    assert (tmp_path / "site" / "thresher" / "demo_data" / "harmful" / "train.jsonl.gz").exists()
    # Ray reuses a wheel it has seen by its file name: the name carries the code's hash, so changed
    # code is a new wheel, and the same code the same one.
    assert "+h" in wheel.name and f"\nVersion: {wheel.name.split('-')[1]}\n" in meta
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv*", ".git", "work", "out", "*.egg-info", "tests"))
    shutil.copytree(REPO / "tests" / "data" / "demo", src / "tests" / "data" / "demo")  # package data
    # A stale module in build/ (left by an earlier build) is not shipped, so the name stays the same.
    (src / "build" / "lib" / "thresher" / "scorers").mkdir(parents=True, exist_ok=True)
    (src / "build" / "lib" / "thresher" / "scorers" / "gone.py").write_text("deleted = True\n")
    assert build_runtime_wheel(tmp_path / "same", source=src).name == wheel.name
    runner = src / "pipeline" / "engine" / "runner.py"
    runner.write_text(runner.read_text() + "\n# changed\n")
    assert build_runtime_wheel(tmp_path / "changed", source=src).name != wheel.name


def test_submit_retries_while_a_new_cluster_has_no_job_agent():
    from thresher.jobs.submit import ClusterError, _submit_when_ready

    class Client:
        def __init__(self, answers):
            self.answers, self.calls = list(answers), 0

        def submit_job(self, **job):
            self.calls += 1
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    not_ready = RuntimeError("Request failed with status code 500: No available agent to submit job")
    c = Client([not_ready, not_ready, "raysubmit_1"])
    assert _submit_when_ready(c, {}, "http://x:8265", wait_s=0.01) == "raysubmit_1" and c.calls == 3
    with pytest.raises(RuntimeError, match="bad runtime_env"):  # other errors are not retried
        _submit_when_ready(Client([RuntimeError("bad runtime_env"), "never"]), {}, "http://x:8265", wait_s=0.01)
    with pytest.raises(ClusterError, match="no job agent ready"):
        _submit_when_ready(Client([not_ready] * 50), {}, "http://x:8265", patience_s=0.05, wait_s=0.01)


@pytest.mark.slow  # a head and a worker node of their own (ray start)
def test_a_token_auth_cluster_and_wrong_job_ids_give_clear_errors(tmp_path):
    """Ray >= 2.60 token auth, set up as the README says; a client without the token is told what to
    set (exit 3), an unknown job id is a one-line error (exit 2), and a client with the token works."""
    ray_dir = Path(tempfile.mkdtemp(prefix="thr", dir="/tmp"))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": f"document {i} " * 5}) + "\n" for i in range(20)))
    p = write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": [str(tmp_path / "d.jsonl")]}], executor="ray")
    with LocalCluster(ray_dir, workers=1, auth="token") as cluster:  # the worker joined with the token
        stranger = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
        stranger["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
        for args in (["list"], ["submit", str(p)], ["status", "raysubmit_x"]):
            r = _cli(*args, "--address", cluster.address, env=stranger)
            assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
            assert "RAY_AUTH_MODE=token" in r.stderr and "auth_token" in r.stderr
        for args in (["status", "raysubmit_nope"], ["logs", "raysubmit_nope"], ["stop", "raysubmit_nope"]):
            r = _cli(*args, "--address", cluster.address, env=cluster.env)
            assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
            assert "no job 'raysubmit_nope' on the cluster" in r.stderr
        # An interpreter the head cannot run Thresher with is found before the job is submitted.
        r = _cli("submit", str(p), "--address", cluster.address, "--python", str(tmp_path / "no-python"),
                 env=cluster.env)
        assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
        assert f"the cluster's `{tmp_path / 'no-python'}` cannot run Thresher" in r.stderr and "--python" in r.stderr
        ok = _cli("submit", str(p), "--address", cluster.address, "--wait", "-o", str(tmp_path / "out"),
                  env=cluster.env)
        assert ok.returncode == 0, ok.stderr[-3000:]
    shutil.rmtree(ray_dir, ignore_errors=True)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["output"]["rows"] == 20


@pytest.mark.slow
def test_an_ablation_runs_as_a_cluster_job(tmp_path):
    ray_dir = Path(tempfile.mkdtemp(prefix="thr", dir="/tmp"))
    with LocalCluster(ray_dir, workers=1) as cluster:
        proc = _cli("submit", str(REPO / "configs" / "demo.yaml"), "--address", cluster.address, "--wait",
                    "--work-dir", str(tmp_path / "work"), "--ablate",
                    f"-o {tmp_path / 'ablation'} --tokens 10000 --seeds 1 --seq-len 64 --batch-size 8",
                    env=cluster.env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.rmtree(ray_dir, ignore_errors=True)
    result = json.loads((tmp_path / "ablation" / "ablation.json").read_text())
    assert result["seeds"] == 1 and set(result["arms"]) == {"curated", "baseline"}
    assert (tmp_path / "ablation" / "curated" / "manifest.json").exists()
