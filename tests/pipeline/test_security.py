"""Nothing listens beyond loopback unless asked; YAML can never name code to import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from thresher.pipeline.config import ConfigError, parse_config

_DASHBOARD = """
import ray
from thresher.pipeline.executor import RayExecutor
RayExecutor(num_cpus=1, include_dashboard=True).ready()
print("URL", ray._private.worker.global_worker.node.address_info["webui_url"])
ray.shutdown()
"""


def test_embedded_dashboard_binds_to_loopback():
    proc = subprocess.run([sys.executable, "-c", _DASHBOARD], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    url = next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("URL"))
    assert url.startswith("127.0.0.1:")


@pytest.mark.parametrize("name", ["os.system", "thresher.stages.normalize.Normalize", "__import__"])
def test_stage_names_resolve_only_through_the_registry(name):
    with pytest.raises(ConfigError, match="unknown stage"):
        parse_config({"inputs": [{"paths": ["x"]}], "stages": [{"stage": name}]})
