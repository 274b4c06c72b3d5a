"""Imports run one way, layer by layer (pipeline/__init__.py names the layers). Read from the
source (every import statement, also those inside functions), so a new shortcut fails here.

    pipeline/core  <-  pipeline/toolkit  <-  pipeline/engine  <-  pipeline/commands
    scorers/ stand alone; stages/ use core, toolkit and scorers, never another stage, and the
    engine finds them by discovery; jobs/ (the Ray Jobs client) stands alone; commands use it.
"""

from __future__ import annotations

import ast
import sys

from conftest import REPO

# What each part may import of Thresher (a part: a top-level folder or a layer of pipeline/).
ALLOWED = {
    "pipeline.core": {"pipeline.core"},
    "pipeline.toolkit": {"pipeline.core", "pipeline.toolkit", "scorers"},
    "pipeline.engine": {"pipeline.core", "pipeline.toolkit", "pipeline.engine", "scorers"},
    "pipeline.commands": {"pipeline.core", "pipeline.toolkit", "pipeline.engine", "pipeline.commands", "scorers",
                          "jobs"},
    "stages": {"pipeline.core", "pipeline.toolkit", "scorers", "stages"},
    "scorers": {"scorers"},
    "jobs": {"jobs"},
}
# Single modules held to less than their layer.
MODULE_FORBIDDEN = {"pipeline.engine.ingest": {"pipeline.engine.config"}}


def _imports(path) -> list[tuple[int, str]]:
    """(line, thresher.<package>.<module>) of every import of Thresher code in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("thresher."):
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("thresher.")]
    return out


def _part(dotted: str) -> str:
    """The part a dotted name (without `thresher.`) belongs to: pipeline.<layer> or a top folder."""
    parts = dotted.split(".")
    return ".".join(parts[:2]) if parts[0] == "pipeline" and len(parts) > 1 else parts[0]


def _modules():
    """(dotted module name without `thresher.`, path) of every source file of the packages."""
    for top in ("pipeline", "stages", "scorers", "jobs"):
        for path in sorted((REPO / top).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            yield ".".join(p for p in rel.parts if p != "__init__"), path


def _violations() -> list[str]:
    found = []
    for module, path in _modules():
        part = _part(module)
        for line, name in _imports(path):
            target = name.removeprefix("thresher.")
            where = f"{path.relative_to(REPO)}:{line} imports {name}"
            if _part(target) not in ALLOWED.get(part, set()) and target not in ("pipeline", "stages", "scorers"):
                found.append(f"{where}: {part} may import only {sorted(ALLOWED.get(part, ()))}")
            if part == "stages" and target.startswith("stages.") and target.split(".")[1] != module.split(".")[1]:
                found.append(f"{where}: a stage imports another stage")
            if any(target == f or target.startswith(f + ".") for f in MODULE_FORBIDDEN.get(module, ())):
                found.append(f"{where}: forbidden for {module}")
    return found


def test_imports_run_one_way():
    assert _violations() == []


def test_no_cycle_between_top_level_folders():
    """pipeline -> jobs only (the CLI submits jobs); jobs imports nothing of pipeline."""
    edges = {(module.split(".")[0], name.removeprefix("thresher.").split(".")[0])
             for module, path in _modules() for _, name in _imports(path)}
    edges = {(a, b) for a, b in edges if a != b}
    assert not {(a, b) for a, b in edges if (b, a) in edges}, edges


def test_the_check_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from thresher.stages.exact_dedup import ExactDedup\n")
    assert _imports(f) == [(2, "thresher.stages.exact_dedup"), (2, "thresher.stages.exact_dedup.ExactDedup")]


def test_the_check_finds_a_layer_violation(tmp_path, monkeypatch):
    """A module of the engine that imported a command would be reported (the rules are live)."""
    bad = tmp_path / "pipeline" / "engine" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from thresher.pipeline.commands.cli import app\n")
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "_modules", lambda: iter([("pipeline.engine.bad", bad)]))
    monkeypatch.setattr(here, "REPO", tmp_path)
    assert _violations() == ["pipeline/engine/bad.py:1 imports thresher.pipeline.commands.cli: pipeline.engine may "
                             "import only ['pipeline.core', 'pipeline.engine', 'pipeline.toolkit', 'scorers']",
                             "pipeline/engine/bad.py:1 imports thresher.pipeline.commands.cli.app: pipeline.engine "
                             "may import only ['pipeline.core', 'pipeline.engine', 'pipeline.toolkit', 'scorers']"]
