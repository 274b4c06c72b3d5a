"""The stage reference comes from the stages' own code: `thresher stages` lists every registered
stage, `thresher stages NAME` explains one, and docs/STAGES.md is what `--markdown` prints."""

from __future__ import annotations

from typer.testing import CliRunner

from conftest import REPO
from thresher.pipeline.commands.cli import app
from thresher.pipeline.commands.stage_docs import as_markdown, reference
from thresher.pipeline.engine import registry

cli = CliRunner()


def test_docs_stages_md_is_generated_from_the_code():
    assert (REPO / "docs" / "STAGES.md").read_text() == as_markdown(reference()), \
        "docs/STAGES.md is out of date: run `make docs`"


def test_stages_lists_every_registered_stage():
    out = cli.invoke(app, ["stages"])
    assert out.exit_code == 0, out.output
    listed = [line.split()[0] for line in out.output.splitlines()[:len(registry.available())]]
    assert listed == list(registry.available())


def test_every_stage_documents_itself():
    """A summary line, a description per parameter and an example that validates: the reference
    has nothing to invent."""
    for info in reference():
        assert info["doc"] and info["doc"].splitlines()[0].endswith("."), info["name"]
        assert all(p["doc"] for p in info["params"]), (info["name"], [p["name"] for p in info["params"]
                                                                      if not p["doc"]])
        params = {k: v for k, v in info["example"][0].items() if k != "stage"}
        registry.get(info["name"]).Params.model_validate(params)


def test_stages_name_prints_one_stage():
    out = cli.invoke(app, ["stages", "harmful_filter"])
    assert out.exit_code == 0, out.output
    text = out.output
    assert text.startswith("harmful_filter\n") and "drops rows as harmful" in text
    assert "tau_method: given | valley | f1 = \"valley\"" in text and "- stage: harmful_filter" in text
    assert "minhash_dedup" not in text


def test_an_unknown_stage_name_suggests_the_closest():
    out = cli.invoke(app, ["stages", "minhash"])
    assert out.exit_code == 2 and "did you mean 'minhash_dedup'" in out.output
