"""A Ray Jobs client: submit a job, follow it, stop it, list jobs; errors that say what to do.

What a job runs (a pipeline made portable, the `thresher` command line) is decided by the CLI
(pipeline/commands/cluster.py); this module only ships files and a command to the cluster, with
Thresher itself as a runtime wheel (package.py). It imports no pipeline code.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import tempfile
import time
from pathlib import Path

from thresher.jobs.package import build_runtime_wheel

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


def submit(files: dict[str, str], entrypoint: str, address: str, wheel: Path | None = None,
           metadata: dict | None = None) -> str:
    """Submits a job that runs `entrypoint` in a working dir holding `files` (name -> text), with
    thresher installed from `wheel` (default: built from this checkout); returns its id."""
    c = client(address)
    staging = Path(tempfile.mkdtemp(prefix="thresher-job-"))
    try:  # the working dir and the wheel are uploaded by submit_job: the staging copy can go after
        for name, text in files.items():
            (staging / name).write_text(text)
        wheel = wheel or build_runtime_wheel(staging / "wheel")
        job = dict(entrypoint=entrypoint, metadata=metadata or {},
                   runtime_env={"working_dir": str(staging), "py_modules": [str(wheel)], "excludes": ["wheel/"]})
        return _submit_when_ready(c, job, address)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# What the interpreter that runs a job must import (Thresher itself travels in the job's wheel).
NEEDED = ("numpy", "pyarrow", "ray", "typer", "pydantic", "yaml")


def check_python(address: str, python: str, timeout_s: float = 120.0) -> None:
    """Runs `python -c "import ..."` of NEEDED as a job on the cluster, before the real job: an
    interpreter that the head cannot find, or whose environment lacks Thresher's dependencies (a
    bare `python` on a head whose PATH lacks the environment), is a ClusterError that says which
    and what to pass, not a job that fails later with ModuleNotFoundError."""
    c = client(address)
    probe = f"{python} -c {shlex.quote('import ' + ', '.join(NEEDED))}"
    job_id = _submit_when_ready(c, dict(entrypoint=probe, metadata={"name": "thresher: check --python"}), address)
    deadline = time.monotonic() + timeout_s
    with _talking_to(address, job_id):
        while (status := str(c.get_job_status(job_id)).split(".")[-1]) not in TERMINAL:
            if time.monotonic() > deadline:
                c.stop_job(job_id)
                raise ClusterError(f"the check of --python {python} on {address} did not end in {timeout_s:.0f} s; "
                                   "check the cluster (`ray status`)")
            time.sleep(0.5)
        if status != "SUCCEEDED":
            said = [ln for ln in c.get_job_logs(job_id).splitlines() if ln.strip()]
            raise ClusterError(f"the cluster's `{python}` cannot run Thresher ({said[-1] if said else status}): pass "
                               "--python with the interpreter of the environment that has Thresher's dependencies "
                               f"({', '.join(NEEDED)}, as `make setup` installs them) on the head, e.g. "
                               "--python /path/to/.venv/bin/python")


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
