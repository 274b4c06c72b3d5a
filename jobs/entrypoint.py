"""The Ray Job entrypoint: `python -m thresher.jobs.entrypoint PIPELINE.yaml`.

Runs `thresher run` on the cluster this job runs on (address "auto", the Ray executor), so a
failed job ends its log with the same one-line error and exit code as a local run, which
`thresher submit --wait` and `thresher logs` show. Its progress records go to the job's log,
where `thresher status` reads the latest.
"""

from __future__ import annotations

import sys

from thresher.pipeline.cli import app


def main(argv: list[str]) -> int:
    """PIPELINE.yaml: thresher run; PIPELINE.yaml ablate ARGS...: thresher ablate PIPELINE.yaml ARGS."""
    if len(argv) != 1 and (len(argv) < 2 or argv[1] != "ablate"):
        print("usage: python -m thresher.jobs.entrypoint PIPELINE.yaml [ablate ARGS...]", file=sys.stderr)
        return 2
    command = (["run", argv[0], "--address", "auto", "--executor", "ray", "--progress-records"] if len(argv) == 1
               else ["ablate", argv[0], "--address", "auto", "--executor", "ray", *argv[2:]])
    try:
        app(command, prog_name="thresher")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
