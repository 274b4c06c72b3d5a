"""Ray Jobs from the CLI: submit a pipeline, follow it, stop it, list jobs.

The pipeline YAML is rewritten with absolute paths (inputs, output, work dir, model files) and
shipped as the job's working_dir; local paths must therefore be visible to the cluster (shared
storage or, for a local cluster, this machine); s3:// and gs:// inputs and models are read by
the nodes themselves. Thresher itself travels as a runtime wheel (package.py).
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from thresher.jobs.package import build_runtime_wheel
from thresher.pipeline import storage
from thresher.pipeline.config import PipelineConfig, load_config

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class ClusterError(RuntimeError):
    """The cluster cannot be reached, or the job failed; the message says which and what to do."""


class JobNotFound(ClusterError):
    """The cluster answers, but has no job of that id."""


AUTH_HELP = ("this Ray cluster requires its auth token (Ray >= 2.60 turns token auth on when the head has one). "
             "On this machine set RAY_AUTH_MODE=token and give it the head's token: copy the head's "
             "~/.ray/auth_token here, or set RAY_AUTH_TOKEN_PATH to a copy of it, or RAY_AUTH_TOKEN to its "
             "contents (`ray get-auth-token` on the head prints it); worker nodes join the same way. On a "
             "trusted network you can instead run the head, the workers and this client with RAY_AUTH_MODE=disabled")


@contextlib.contextmanager
def _talking_to(address: str, job_id: str | None = None):
    """Ray's client errors as ClusterErrors that say what to do."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        raise ClusterError(f"{address}: {str(exc).splitlines()[0]}: {AUTH_HELP}") from None
    except RuntimeError as exc:
        if job_id and ("does not exist" in str(exc) or "404" in str(exc)):
            raise JobNotFound(f"no job {job_id!r} on the cluster at {address}; `thresher list --address "
                              f"{address}` shows its jobs") from None
        raise


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        with _talking_to(address):
            return JobSubmissionClient(address)
    except ClusterError:
        raise
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot reach a Ray job server at {address} ({exc}). Check the address (the "
                           "dashboard port, default 8265), that the cluster is up, and its auth mode "
                           "(RAY_AUTH_MODE / token)") from None


def resolved_yaml(cfg: PipelineConfig) -> dict:
    """The pipeline with every path absolute, so it means the same on the cluster; object-store
    URIs mean the same everywhere as they are (the nodes read them with their own credentials)."""
    data = cfg.raw.model_dump(mode="json")
    for spec in data["inputs"]:
        spec["paths"] = [cfg.absolute(p) for p in spec["paths"]]
    data["output"]["dir"] = cfg.absolute(cfg.output.dir)
    data["work_dir"] = cfg.absolute(cfg.work_dir)
    data["stages"] = [{"stage": s.name, **s.params.model_dump(mode="json")} for s in cfg.stages]
    data["ray"]["address"] = None
    if data.get("eval"):
        data["eval"] = {d: [cfg.absolute(p) for p in paths] for d, paths in data["eval"].items()}
    return data


def submit(pipeline: Path, address: str, python: str = "python", output: str | None = None,
           work_dir: str | None = None, wheel: Path | None = None, ablate: list[str] | None = None) -> str:
    """`ablate`: run `thresher ablate` on the cluster instead of `thresher run`, with these
    arguments after the pipeline (its -o folder and, for --baseline OTHER.yaml, that pipeline are
    made absolute, the other pipeline shipped beside this one)."""
    cfg = load_config(pipeline)
    data = resolved_yaml(cfg)
    if output:
        data["output"]["dir"] = output if storage.is_remote(output) else str(Path(output).resolve())
    if work_dir:
        data["work_dir"] = work_dir if storage.is_remote(work_dir) else str(Path(work_dir).resolve())
    c = client(address)
    staging = Path(tempfile.mkdtemp(prefix="thresher-job-"))
    try:  # the working dir and the wheel are uploaded by submit_job: the staging copy can go after
        (staging / "pipeline.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        command = "pipeline.yaml" + ("" if ablate is None else " ablate " + " ".join(
            shlex.quote(a) for a in _ablate_args(ablate, staging)))
        wheel = wheel or build_runtime_wheel(staging / "wheel")
        job = dict(entrypoint=f"{python} -m thresher.jobs.entrypoint {command}",
                   runtime_env={"working_dir": str(staging), "py_modules": [str(wheel)], "excludes": ["wheel/"]},
                   metadata={"thresher_pipeline": str(Path(pipeline).resolve()), "name": cfg.name})
        return _submit_when_ready(c, job, address)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _ablate_args(args: list[str], staging: Path) -> list[str]:
    """The ablate arguments as the cluster must read them: its output folder absolute, another
    pipeline as baseline resolved like this one and shipped as baseline.yaml."""
    out = list(args)
    for flag in ("-o", "--output"):
        if flag in out and out.index(flag) + 1 < len(out):
            i = out.index(flag) + 1
            out[i] = out[i] if storage.is_remote(out[i]) else str(Path(out[i]).resolve())
    if "--baseline" in out and out.index("--baseline") + 1 < len(out):
        i = out.index("--baseline") + 1
        if out[i] != "raw":
            other = resolved_yaml(load_config(Path(out[i])))
            (staging / "baseline.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
            out[i] = "baseline.yaml"
    return out


def _submit_when_ready(c, job: dict, address: str, patience_s: float = 60.0, wait_s: float = 2.0) -> str:
    """A cluster that has just started answers "no available agent" until its job agents are up:
    that answer is retried for up to `patience_s`; any other error is not."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            with _talking_to(address):
                return c.submit_job(**job)
        except RuntimeError as exc:
            if "No available agent" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise ClusterError(f"the Ray cluster at {address} has no job agent ready after "
                                   f"{patience_s:.0f} s ({exc}); check that its nodes are up "
                                   "(`ray status`) and submit again") from None
            time.sleep(wait_s)


def wait(address: str, job_id: str, follow_logs: bool = True, poll_s: float = 1.0, echo=print) -> str:
    c = client(address)
    with _talking_to(address, job_id):
        if follow_logs:
            import asyncio

            async def _tail():
                async for chunk in c.tail_job_logs(job_id):
                    echo(chunk.rstrip("\n"))

            asyncio.run(_tail())
        while (status := str(c.get_job_status(job_id)).split(".")[-1]) not in TERMINAL:
            time.sleep(poll_s)
    return status


def status(address: str, job_id: str) -> dict:
    c = client(address)
    with _talking_to(address, job_id):
        info = c.get_job_info(job_id)
    return {"job_id": job_id, "status": str(info.status).split(".")[-1], "message": info.message,
            "entrypoint": info.entrypoint, "start_time": info.start_time, "end_time": info.end_time}


def logs(address: str, job_id: str) -> str:
    c = client(address)
    with _talking_to(address, job_id):
        return c.get_job_logs(job_id)


def stop(address: str, job_id: str) -> bool:
    c = client(address)
    with _talking_to(address, job_id):
        return c.stop_job(job_id)


def list_jobs(address: str) -> list[dict]:
    c = client(address)
    with _talking_to(address):
        jobs = c.list_jobs()
    return [{"job_id": j.submission_id, "status": str(j.status).split(".")[-1],
             "name": (j.metadata or {}).get("name", ""), "entrypoint": j.entrypoint}
            for j in jobs if j.submission_id]
