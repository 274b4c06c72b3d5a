"""The stage reference, generated from the stages themselves: their docstrings, declared columns,
drop reasons, resources, parameters (type, default, description) and example. `thresher stages`
prints it; docs/STAGES.md is the same text as Markdown (`make docs` writes it, a test keeps it
in sync), so the reference can never drift from the code."""

from __future__ import annotations

import inspect
import json
from typing import Literal, get_args, get_origin

import yaml
from pydantic_core import PydanticUndefined

from thresher.pipeline.core.stage import Stage, is_column_field, is_output_field, is_path_field
from thresher.pipeline.engine import registry

HEADER = """# Stages

Every stage a pipeline can use, generated from the stages' own code by `thresher stages --markdown`
(`make docs` rewrites this file; a test fails when it is out of date). `thresher stages NAME` prints
one stage in the terminal. Paths in parameters are relative to the YAML file, like the inputs; the
examples name models as `thresher demo` makes them (models/).

The output `weight` of a row is the product of the weight columns the stages declare, scaled per
group by a mixture when there is one. Every dropped row is kept in `rejected/` with its stage and
reason.
"""


def type_name(field) -> str:
    """A parameter's type as a user writes it: `path`, `int`, `float | None`, `low | medium | high`."""
    a = field.annotation
    for kind, marked in (("path", is_path_field), ("output path", is_output_field), ("column", is_column_field)):
        if marked(field):
            if get_origin(a) is list:
                return f"list of {kind}s"
            return kind + (" | None" if type(None) in get_args(a) else "")
    if get_origin(a) is Literal:
        return " | ".join(str(v) for v in get_args(a))
    return a.__name__ if isinstance(a, type) else str(a).replace("typing.", "")


def _default(field) -> str:
    """The default as YAML would spell it (JSON is YAML's flow style)."""
    if field.default is PydanticUndefined:
        return "[]" if field.default_factory is list else "required"
    return json.dumps(field.default)


def describe(cls: type[Stage]) -> dict:
    """Everything the reference says of one stage, as JSON-able data."""
    resources = cls.resources
    return {
        "name": cls.name,
        "doc": inspect.cleandoc(cls.__doc__ or ""),
        "inputs": list(cls.inputs), "outputs": list(cls.outputs), "weights": list(cls.weights),
        "drop_reasons": list(cls.drop_reasons), "global_pass": cls.has_global_pass(),
        "resources": {"cpus": resources.cpus, "gpus": resources.gpus,
                      "by_params": cls.resources_for.__func__ is not Stage.resources_for.__func__},
        "params": [{"name": k, "type": type_name(f), "default": _default(f), "doc": f.description or ""}
                   for k, f in cls.Params.model_fields.items()],
        "example": [{"stage": cls.name, **cls.example}],
    }


def _facts(info: dict, quote: str = "") -> list[str]:
    def listed(values):
        return ", ".join(f"{quote}{v}{quote}" for v in values) or "-"

    r = info["resources"]
    gpu = f", {r['gpus']:g} GPU" if r["gpus"] else ""
    gpu += " (a GPU when its parameters ask for one)" if r["by_params"] else ""
    return [f"reads {listed(info['inputs'])}; adds {listed(info['outputs'])}"
            + (f"; weights {listed(info['weights'])}" if info["weights"] else ""),
            f"drops rows as {listed(info['drop_reasons'])}" if info["drop_reasons"] else "drops no row",
            ("global pass over the whole corpus, then per batch" if info["global_pass"] else "per batch")
            + f"; {r['cpus']:g} CPU per worker{gpu}"]


def as_text(info: dict) -> str:
    """One stage for the terminal."""
    lines = [info["name"], *(f"  {fact}" for fact in _facts(info)), ""]
    lines += [f"  {line}" if line else "" for line in info["doc"].splitlines()]
    lines += ["", "  parameters:"]
    for p in info["params"]:
        lines.append(f"    {p['name']}: {p['type']} = {p['default']}" + (f"  - {p['doc']}" if p["doc"] else ""))
    lines += ["", "  example:", *("    " + line for line in yaml.safe_dump(info["example"], sort_keys=False).splitlines())]
    return "\n".join(lines)


def as_markdown(infos: list[dict]) -> str:
    """docs/STAGES.md."""
    out = [HEADER, "| stage | adds | drops |", "|---|---|---|"]
    out += [f"| [`{i['name']}`](#{i['name']}) | {', '.join(f'`{c}`' for c in i['outputs']) or '-'} | "
            f"{', '.join(f'`{r}`' for r in i['drop_reasons']) or '-'} |" for i in infos]
    for i in infos:
        out += ["", f"## {i['name']}", "", i["doc"], "", *(f"- {fact}" for fact in _facts(i, "`")), "",
                "| parameter | type | default | description |", "|---|---|---|---|"]
        out += [f"| `{p['name']}` | {_cell(p['type'])} | {_cell(p['default'], code=p['default'] != 'required')} | "
                f"{_cell(p['doc'])} |" for p in i["params"]]
        out += ["", "```yaml", yaml.safe_dump(i["example"], sort_keys=False).rstrip(), "```"]
    return "\n".join(out).rstrip() + "\n"


def _cell(text: str, code: bool = False) -> str:
    """Text for a Markdown table cell: a `|` would end the cell."""
    text = text.replace("|", "\\|")
    return f"`{text}`" if code else text


def reference() -> list[dict]:
    return [describe(cls) for cls in registry.available().values()]
