"""What `thresher submit` ships to a Ray cluster: the pipeline made portable (every local path
absolute; local paths must therefore be visible to the cluster: shared storage or, for a local
cluster, this machine) and the `thresher` command line the job runs there. jobs/ does the talking.

The job runs `thresher run` (or `thresher ablate`) against the cluster it runs on (address auto,
the Ray executor), so a failed job ends its log with the same one-line error and exit code as a
local run, which `thresher submit --wait` and `thresher logs` show; its progress records go to
the job's log, where `thresher status` reads the latest.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from thresher.jobs import submit as jobs
from thresher.pipeline.core import storage
from thresher.pipeline.engine.config import load_config

CLI_MODULE = "thresher.pipeline.commands.cli"


def _absolute(path: str) -> str:
    return path if storage.is_remote(path) else str(Path(path).resolve())


def submit_pipeline(pipeline: Path, address: str, python: str = "python", output: str | None = None,
                    work_dir: str | None = None, wheel: Path | None = None, ablate: list[str] | None = None) -> str:
    """Submits PIPELINE as a Ray Job; returns its id. `ablate`: run `thresher ablate` on the cluster
    instead of `thresher run`, with these arguments after the pipeline (its -o folder and, for
    --baseline OTHER.yaml, that pipeline made absolute, the other pipeline shipped beside this one)."""
    cfg = load_config(pipeline)
    data = cfg.portable()
    if output:
        data["output"]["dir"] = _absolute(output)
    if work_dir:
        data["work_dir"] = _absolute(work_dir)
    files = {"pipeline.yaml": yaml.safe_dump(data, sort_keys=False)}
    if ablate is None:
        args = ["run", "pipeline.yaml", "--address", "auto", "--executor", "ray", "--progress-records"]
    else:
        args = ["ablate", "pipeline.yaml", "--address", "auto", "--executor", "ray", *_ablate_args(ablate, files)]
    entrypoint = f"{python} -m {CLI_MODULE} " + " ".join(shlex.quote(a) for a in args)
    jobs.check_python(address, python)
    return jobs.submit(files, entrypoint, address, wheel=wheel,
                       metadata={"thresher_pipeline": str(Path(pipeline).resolve()), "name": cfg.name})


def _ablate_args(args: list[str], files: dict[str, str]) -> list[str]:
    """The ablate arguments as the cluster must read them: its output folder absolute, another
    pipeline as baseline made portable like this one and shipped as baseline.yaml."""
    out = list(args)
    for flag in ("-o", "--output"):
        if flag in out and out.index(flag) + 1 < len(out):
            i = out.index(flag) + 1
            out[i] = _absolute(out[i])
    if "--baseline" in out and out.index("--baseline") + 1 < len(out):
        i = out.index("--baseline") + 1
        if out[i] != "raw":
            files["baseline.yaml"] = yaml.safe_dump(load_config(Path(out[i])).portable(), sort_keys=False)
            out[i] = "baseline.yaml"
    return out
