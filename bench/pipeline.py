"""End-to-end demo pipeline: wall time, docs/s and stage breakdown, on Ray vs in one process.

    .venv/bin/python bench/pipeline.py

Both runs use configs/demo.yaml on the bundled corpus from an empty work dir; writes
bench/results/pipeline.json.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine, write_result  # noqa: E402


def run(executor: str) -> dict:
    from thresher.pipeline.engine.config import load_config
    from thresher.pipeline.engine.progress import Progress
    from thresher.pipeline.engine.runner import Runner

    cfg = load_config(ROOT / "configs" / "demo.yaml").with_overrides(executor=executor)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = Runner(cfg, progress=Progress(False), output_dir=f"{tmp}/out", work_dir=f"{tmp}/work").run()
        wall = time.perf_counter() - t0
    m = res.manifest
    return {"wall_seconds": wall, "docs_per_s": m["totals"]["rows_in"] / wall,
            "stage_seconds": m["timing"]["stage_seconds"], "rows_out": m["output"]["rows"]}


def main() -> None:
    import ray

    inline = run("inline")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")  # start-up outside the timing
    try:
        on_ray = run("ray")
    finally:
        ray.shutdown()
    assert inline["rows_out"] == on_ray["rows_out"]
    result = {"machine": machine(), "inputs": {"config": "configs/demo.yaml", "docs": 17_656},
              "contenders": {"ray_2_cpus": on_ray, "inline_1_process": inline},
              "docs_per_s": {"ray_2_cpus": on_ray["docs_per_s"], "inline_1_process": inline["docs_per_s"]},
              "speedup_ray_vs_inline": inline["wall_seconds"] / on_ray["wall_seconds"]}
    path = write_result("pipeline.json", result)
    print(f"demo on Ray (2 CPUs): {on_ray['wall_seconds']:.1f} s, {on_ray['docs_per_s']:,.0f} docs/s; "
          f"in one process: {inline['wall_seconds']:.1f} s ({result['speedup_ray_vs_inline']:.2f}x)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
