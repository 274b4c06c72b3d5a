"""YAML can never name code to import. (That an embedded Ray listens on loopback only:
test_embedded_ray.py.)"""

from __future__ import annotations

import pytest

from thresher.pipeline.engine.config import ConfigError, parse_config


@pytest.mark.parametrize("name", ["os.system", "thresher.stages.normalize.Normalize", "__import__"])
def test_stage_names_resolve_only_through_the_registry(name):
    with pytest.raises(ConfigError, match="unknown stage"):
        parse_config({"inputs": [{"paths": ["x"]}], "stages": [{"stage": name}]})
