"""The Ray Job entrypoint: `python -m thresher.jobs.entrypoint PIPELINE.yaml`.

Runs on the cluster, connected to it (address "auto"); exits non-zero with the error on stderr,
so `thresher submit --wait` and `thresher status` report a failed job as failed.
"""

from __future__ import annotations

import sys

from thresher.pipeline.config import load_config
from thresher.pipeline.runner import Runner


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m thresher.jobs.entrypoint PIPELINE.yaml", file=sys.stderr)
        return 2
    cfg = load_config(argv[0])
    cfg.raw.ray.address = "auto"  # the cluster this job runs on
    cfg.raw.executor = "ray"
    result = Runner(cfg).run()
    print(f"thresher job done: {result.manifest['output']['rows']:,} rows -> {result.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
