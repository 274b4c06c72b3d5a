from __future__ import annotations

import pytest

from conftest import REPO, thresher, write_pipeline
from thresher.pipeline.engine.config import ConfigError, load_config


def _errors(tmp_path, text: str) -> ConfigError:
    p = tmp_path / "p.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    return info.value


def test_demo_config_is_valid():
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert [s.name for s in cfg.stages] == ["normalize", "length_filter", "exact_dedup", "minhash_dedup", "softdedup"]
    assert cfg.stages[1].params.min_words == 20
    assert cfg.resolve(cfg.output.dir) == (REPO / "out" / "demo")


def test_every_error_is_reported_with_path_line_and_hint(tmp_path):
    err = _errors(tmp_path, """\
inputs:
  - paths: ["x/*.jsonl"]
    text_colum: body
stages:
  - stage: normalise
  - stage: length_filter
    min_char: 10
  - stage: length_filter
    min_words: many
seed: zero
""")
    by_path = {i.path: i for i in err.issues}
    assert set(by_path) == {"inputs[0].text_colum", "stages[0].stage", "stages[1].min_char",
                            "stages[2].min_words", "seed"}
    assert "did you mean 'text_column'" in by_path["inputs[0].text_colum"].hint
    assert by_path["inputs[0].text_colum"].line == 3
    assert "did you mean 'normalize'" in by_path["stages[0].stage"].message
    assert by_path["stages[0].stage"].line == 5
    assert "did you mean 'min_chars'" in by_path["stages[1].min_char"].hint
    assert by_path["stages[1].min_char"].line == 7
    assert by_path["stages[2].min_words"].line == 9
    assert by_path["seed"].line == 10


def test_missing_inputs_and_stage_key(tmp_path):
    err = _errors(tmp_path, "stages:\n  - {min_chars: 3}\n")
    paths = {i.path for i in err.issues}
    assert {"inputs", "stages[0]"} <= paths
    assert any("add `inputs:`" in i.hint for i in err.issues)


def test_invalid_yaml_names_the_line(tmp_path):
    err = _errors(tmp_path, "inputs:\n  - paths: [a\nstages: []\n")
    assert err.issues[0].path == "<yaml>" and err.issues[0].line is not None


def test_yaml_tags_cannot_construct_python_objects(tmp_path):
    err = _errors(tmp_path, "inputs: !!python/object/apply:os.system ['echo hi']\n")
    assert err.issues[0].path == "<yaml>"


def test_parameter_constraints(tmp_path):
    err = _errors(tmp_path, "inputs: [{paths: [a]}]\nstages:\n  - {stage: length_filter, min_chars: 10, max_chars: 5}\n")
    assert "max_chars must be >= min_chars" in str(err)


def test_stage_needing_a_column_nobody_adds(tmp_path, monkeypatch):
    from thresher.pipeline.core.stage import Stage
    from thresher.pipeline.engine import registry

    class NeedsScore(Stage):
        name = "needs_score_for_test"
        inputs = ("score",)

    monkeypatch.setitem(registry._STAGES, NeedsScore.name, NeedsScore)
    err = _errors(tmp_path, "inputs: [{paths: [a]}]\nstages:\n  - stage: needs_score_for_test\n")
    assert "stage needs_score_for_test needs column 'score'" in str(err)


def test_columns_named_by_parameters_are_checked_before_running_at_their_line(tmp_path):
    err = _errors(tmp_path, "inputs: [{paths: [a]}]\n"
                            "stages:\n"
                            "  - stage: normalize\n"
                            "  - stage: fedrw\n"
                            "    eps: 0.001\n"
                            "    count_column: dup_cluster_size\n"
                            "  - stage: ppl_select\n"
                            "    column: ref_bpb\n"
                            "output:\n"
                            "  group_column: topic\n")
    issues = {i.path: i for i in err.issues}
    assert set(issues) == {"stages[1].count_column", "stages[2].column", "output.group_column"}
    assert issues["stages[1].count_column"].line == 6 and "minhash_dedup" in issues["stages[1].count_column"].hint
    assert issues["stages[2].column"].line == 8 and "ref_perplexity" in issues["stages[2].column"].hint
    assert issues["output.group_column"].line == 10
    # Once the producers run earlier, the same parameters are fine.
    ok = write_pipeline(tmp_path / "ok.yaml", inputs=[{"paths": ["a"]}], output={"group_column": "topic"}, stages=[
        {"stage": "minhash_dedup", "policy": "reweight"}, {"stage": "fedrw", "count_column": "dup_cluster_size"},
        {"stage": "topics"}])
    cfg = load_config(ok)
    assert cfg.stages[1].columns.inputs == ("text", "dup_cluster_size")
    assert cfg.stages[0].columns.weights == ("dedup_weight",)


def test_cli_validate_exit_codes(tmp_path):
    good = write_pipeline(tmp_path / "good.yaml", inputs=[{"paths": ["*.jsonl"]}], stages=[{"stage": "normalize"}])
    bad = write_pipeline(tmp_path / "bad.yaml", inputs=[{"paths": ["*.jsonl"]}], stages=[{"stage": "nope"}])
    ok = thresher("validate", good)
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout
    ko = thresher("validate", bad)
    assert ko.returncode == 2
    assert "stages[0].stage" in ko.stderr and "unknown stage 'nope'" in ko.stderr


@pytest.mark.parametrize("name", ["demo.yaml", "full.yaml", "cluster.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(REPO / "configs" / name)
    assert cfg.stages


def test_overrides_make_a_validated_copy(tmp_path):
    from conftest import write_pipeline
    from thresher.pipeline.engine.config import ConfigError, load_config

    cfg = load_config(write_pipeline(tmp_path / "p.yaml", inputs=[{"paths": ["x"]}], executor="ray"))
    new = cfg.with_overrides(executor="inline", ray={"address": "auto"})
    assert (new.executor, new.ray.address, new.ray.include_dashboard) == ("inline", "auto", False)
    assert (cfg.executor, cfg.ray.address) == ("ray", None)  # the original is untouched
    with pytest.raises(ConfigError, match="executor"):
        cfg.with_overrides(executor="spark")


def test_every_path_parameter_resolves_against_the_yaml_folder(tmp_path):
    """Parameters typed LocalPath (required or optional, or a list of them) or OutputPath are relative
    to the YAML file, as inputs are; URIs stay as they are."""
    from thresher.pipeline.core.stage import is_output_field, is_path_field
    from thresher.pipeline.engine import registry

    stages = [{"stage": "softdedup", "tokenizer": "tok"},
              {"stage": "harmful_filter", "model": "m/harm.bin", "tau_method": "f1", "validation": "v.jsonl"},
              {"stage": "exact_dedup", "index": "idx", "against": ["old", "s3://b/old"]}]
    (tmp_path / "sub").mkdir()
    cfg = load_config(write_pipeline(tmp_path / "sub" / "p.yaml", inputs=[{"paths": ["x"]}], stages=stages))
    soft, harm, exact = (s.params for s in cfg.stages)
    assert soft.tokenizer == str(tmp_path / "sub" / "tok")
    assert (harm.model, harm.validation) == (str(tmp_path / "sub" / "m/harm.bin"), str(tmp_path / "sub" / "v.jsonl"))
    assert (exact.index, exact.against) == (str(tmp_path / "sub" / "idx"), [str(tmp_path / "sub" / "old"), "s3://b/old"])
    paths = {(n, f) for n, c in registry.available().items() for f, info in c.Params.model_fields.items()
             if is_path_field(info)}
    assert paths == {("harmful_filter", "model"), ("harmful_filter", "validation"), ("mixture", "tokenizer"),
                     ("ppl_correlation", "matrix"), ("ppl_correlation", "benchmark"), ("ref_perplexity", "model"),
                     ("softdedup", "tokenizer"), ("topics", "embedding_model"), ("exact_dedup", "against"),
                     ("minhash_dedup", "against")}
    outputs = {(n, f) for n, c in registry.available().items() for f, info in c.Params.model_fields.items()
               if is_output_field(info)}
    assert outputs == {("exact_dedup", "index"), ("minhash_dedup", "index")}
