"""Imports run one way: the engine (pipeline/) names no stage, stages use pipeline/ and scorers/
but never each other, and scorers/ stand alone. Read from the source (every import statement,
also those inside functions), so a new shortcut fails here."""

from __future__ import annotations

import ast

from conftest import REPO

PACKAGES = ("pipeline", "stages", "scorers", "jobs")
FORBIDDEN = {"pipeline": {"stages"}, "scorers": {"pipeline", "stages", "jobs"}, "stages": {"jobs"}}


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


def _violations() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).glob("*.py")):
            for line, name in _imports(path):
                parts = name.split(".")
                target = parts[1] if len(parts) > 1 else ""
                if target in FORBIDDEN.get(package, ()):
                    found.append(f"{package}/{path.name}:{line} imports {name}")
                if package == "stages" and target == "stages" and len(parts) > 2 and parts[2] != path.stem:
                    found.append(f"stages/{path.name}:{line} imports another stage: {name}")
    return found


def test_imports_run_one_way():
    assert _violations() == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from thresher.stages.exact_dedup import ExactDedup\n")
    assert _imports(f) == [(2, "thresher.stages.exact_dedup"), (2, "thresher.stages.exact_dedup.ExactDedup")]
