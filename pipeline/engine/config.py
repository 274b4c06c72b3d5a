"""Pipeline definitions: YAML -> validated pydantic models, with errors a user can act on.

Every error names its YAML path (e.g. `stages[1].min_chars`), its line, and a hint. Stage
parameters are validated against each stage's own `Params` model, so an unknown stage or an
unknown parameter is an error, never silently ignored.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from thresher.pipeline.core import schema, storage
from thresher.pipeline.core.errors import ActionableError
from thresher.pipeline.core.stage import Columns, Params, Resources, Stage, is_output_field, is_path_field
from thresher.pipeline.engine import registry
from thresher.pipeline.engine.ingest import InputFile, InputSpec, discover_inputs


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutputSpec(_Model):
    dir: str = "out"
    group_column: str = "domain"
    row_group_size: int = Field(10_000, gt=0)
    write_rejected: bool = True


class RayOptions(_Model):
    address: str | None = None
    num_cpus: int | None = Field(None, gt=0)
    object_store_memory_mb: int | None = Field(None, gt=0)
    include_dashboard: bool = False


class _RawConfig(_Model):
    name: str = "pipeline"
    inputs: list[InputSpec] = Field(min_length=1)
    stages: list[dict[str, Any]] = Field(default_factory=list)
    output: OutputSpec = OutputSpec()
    work_dir: str = "work"
    seed: int = 0
    shard_rows: int = Field(20_000, gt=0, description="rows per shard written by ingest")
    batch_rows: int = Field(4096, gt=0, description="rows per stage call inside a shard")
    on_duplicate_id: Literal["warn", "error", "suffix"] = Field(
        "warn", description="an id on several input rows: keep and report it, stop, or rename later copies id#N")
    input_key: Literal["stat", "content"] = Field(
        "stat", description="what tells a changed input file: its size and modification time (stat), or a "
        "hash of its bytes as well (content: reads every input once more before a run)")
    executor: Literal["ray", "inline"] = "ray"
    ray: RayOptions = RayOptions()
    eval: dict[str, list[str]] | None = Field(
        None, description="held-out evaluation text for `thresher ablate`: files (JSONL, Parquet, text) per domain")


@dataclass(frozen=True)
class StageConfig:
    name: str
    cls: type[Stage]
    params: Params

    def build(self, seed: int) -> Stage:
        """The stage, with any path parameter in object storage replaced by this node's cached copy."""
        return self.cls(_fetched(self.params), seed=seed)

    @property
    def columns(self) -> Columns:
        return self.cls.columns_for(self.params)

    @property
    def resources(self) -> Resources:
        return self.cls.resources_for(self.params)


@dataclass
class PipelineConfig:
    raw: _RawConfig
    stages: list[StageConfig]
    base_dir: Path  # relative paths in the YAML resolve against this

    def __getattr__(self, item):  # name, inputs, output, seed, ...
        return getattr(self.raw, item)

    def with_overrides(self, **fields) -> "PipelineConfig":
        """A copy with top-level settings replaced (a dict updates a nested section, e.g.
        ray={"address": "auto"}), validated like the YAML; the original is left as it was."""
        data = self.raw.model_dump()
        for key, value in fields.items():
            data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
        try:
            raw = _RawConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError("overrides", [ConfigIssue(_fmt_path(tuple(e["loc"])), e["msg"]) for e in exc.errors()])
        return PipelineConfig(raw, self.stages, self.base_dir)

    def resolve(self, path: str) -> Path:
        """A local path (or file:// URI) relative to the YAML file, made absolute."""
        p = Path(storage.plain(path)).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def absolute(self, path: str) -> str:
        """What `path` means wherever the pipeline runs: an s3:// or gs:// URI as it is, a local
        path made absolute (resolve)."""
        return path if storage.is_remote(path) else str(self.resolve(path))

    def input_files(self, exclude: tuple = ()) -> tuple[list[InputFile], dict[str, int]]:
        """The input files the `inputs:` globs match now (engine/ingest.py's discover_inputs)."""
        return discover_inputs(self.inputs, self.base_dir, exclude)

    def portable(self) -> dict:
        """The pipeline as YAML data with every local path absolute, so that it means the same
        wherever it runs (a cluster's nodes); object-store URIs stay as they are (the nodes read
        them with their own credentials). Ray's address is left for the place it runs to set."""
        data = self.raw.model_dump(mode="json")
        for spec in data["inputs"]:
            spec["paths"] = [self.absolute(p) for p in spec["paths"]]
        data["output"]["dir"] = self.absolute(self.output.dir)
        data["work_dir"] = self.absolute(self.work_dir)
        data["stages"] = [{"stage": s.name, **s.params.model_dump(mode="json")} for s in self.stages]
        data["ray"]["address"] = None
        if data.get("eval"):
            data["eval"] = {d: [self.absolute(p) for p in paths] for d, paths in data["eval"].items()}
        return data

    def canonical(self) -> dict:
        """What determines the result: used for the work-dir key (executor/ray/output excluded)."""
        data = self.raw.model_dump(mode="json", exclude={"ray", "executor", "output", "eval"})
        data["stages"] = [{"stage": s.name, **s.params.model_dump(mode="json")} for s in self.stages]
        return data


@dataclass
class ConfigIssue:
    path: str
    message: str
    hint: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}" + (f" (line {self.line})" if self.line else "")
        return f"{where}: {self.message}" + (f"\n    hint: {self.hint}" if self.hint else "")


class ConfigError(ActionableError, ValueError):
    def __init__(self, source: str, issues: list[ConfigIssue]):
        self.source = source
        self.issues = issues
        lines = [f"{source}: {len(issues)} error(s)"] + [f"  {i}" for i in issues]
        super().__init__("\n".join(lines))


def _fmt_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


def _node_line(node: yaml.Node | None, loc: tuple) -> int | None:
    """Line (1-based) of the YAML node at `loc`, or of its deepest existing parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == part), None)
            if child is None:  # an unknown key: point at the key itself
                child = next((k for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _hint(err: dict, model: type[BaseModel] | None) -> str:
    kind = err["type"]
    name = err["loc"][-1] if err["loc"] else ""
    if kind == "extra_forbidden" and model is not None:
        fields = list(model.model_fields)
        close = difflib.get_close_matches(str(name), fields, n=1)
        return (f"did you mean {close[0]!r}? " if close else "") + f"allowed keys: {', '.join(fields)}"
    if kind == "missing":
        return f"add `{name}:`"
    if kind == "literal_error":
        return f"use one of the allowed values ({err.get('ctx', {}).get('expected', '')})"
    return ""


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] | None = _RawConfig
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def parse_config(data: Any, source: str = "<config>", node: yaml.Node | None = None,
                 base_dir: Path | None = None) -> PipelineConfig:
    issues: list[ConfigIssue] = []
    if not isinstance(data, dict):
        raise ConfigError(source, [ConfigIssue("<top>", "the pipeline must be a YAML mapping",
                                               "start with `inputs:` and `stages:` keys", 1)])
    raw = None
    try:
        raw = _RawConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            issues.append(ConfigIssue(_fmt_path(loc), err["msg"], _hint(err, _model_at(loc)),
                                      _node_line(node, loc)))

    stages: list[StageConfig] = []
    for i, entry in enumerate(data.get("stages") or []):
        loc = ("stages", i)
        if not isinstance(entry, dict) or "stage" not in entry:
            issues.append(ConfigIssue(_fmt_path(loc), "each stage needs a `stage:` key",
                                      "e.g. `- stage: normalize`", _node_line(node, loc)))
            continue
        name = entry["stage"]
        try:
            cls = registry.get(str(name))
        except KeyError as exc:
            issues.append(ConfigIssue(_fmt_path(loc + ("stage",)), exc.args[0],
                                      "run `thresher stages` for the list", _node_line(node, loc + ("stage",))))
            continue
        try:
            params = cls.Params.model_validate({k: v for k, v in entry.items() if k != "stage"})
            stages.append(StageConfig(str(name), cls, _resolve_paths(params, base_dir or Path.cwd())))
        except ValidationError as exc:
            for err in exc.errors():
                eloc = loc + tuple(err["loc"])
                issues.append(ConfigIssue(_fmt_path(eloc), f"{err['msg']} (stage {name})",
                                          _hint(err, cls.Params), _node_line(node, eloc)))
    if raw is not None:
        issues.extend(_check_stage_columns(raw, stages, node))
    if issues:
        raise ConfigError(source, issues)
    return PipelineConfig(raw, stages, base_dir or Path.cwd())


def _path_params(params: Params, outputs: bool = False) -> list[tuple[str, str | list[str]]]:
    """(name, value) of the LocalPath parameters (a path or a list of paths); with `outputs`, the
    OutputPath ones as well."""
    return [(n, getattr(params, n)) for n, f in type(params).model_fields.items()
            if (is_path_field(f) or (outputs and is_output_field(f))) and getattr(params, n)]


def _each(value, fn):
    """fn applied to a path parameter's value, or to each path of a list of them."""
    return [fn(v) for v in value] if isinstance(value, list) else fn(value)


def _resolve_paths(params: Params, base_dir: Path) -> Params:
    """Stage parameters typed LocalPath or OutputPath are relative to the YAML file, like inputs;
    URIs stay as they are (file:// becomes the path it names)."""
    def resolved(value: str) -> str:
        value = storage.plain(value)
        if not storage.is_remote(value) and not Path(value).expanduser().is_absolute():
            return str((base_dir / value).resolve())
        return value

    update = {name: _each(value, resolved) for name, value in _path_params(params, outputs=True)}
    update = {name: value for name, value in update.items() if value != getattr(params, name)}
    return params.model_copy(update=update) if update else params


def _fetched(params: Params) -> Params:
    def fetched(value: str) -> str:
        return storage.cached_copy(value) if storage.is_remote(value) else value

    update = {name: _each(value, fetched) for name, value in _path_params(params)}
    update = {name: value for name, value in update.items() if value != getattr(params, name)}
    return params.model_copy(update=update) if update else params


def _check_stage_columns(raw: _RawConfig, stages: list[StageConfig], node) -> list[ConfigIssue]:
    """Every stage finds its input columns among the ingested ones and earlier stages' outputs, and
    the output's group column exists: checked before anything runs. A column that a parameter
    names is reported at that parameter's line."""
    ingested = {schema.ID, schema.TEXT, schema.SOURCE, schema.DOMAIN}
    added: dict[str, int] = {}  # column -> the stage that added it
    issues = []
    for i, st in enumerate(stages):
        cols = st.columns
        for c in cols.inputs:
            if c in ingested or c in added:
                continue
            param = cols.named_by.get(c)
            loc = ("stages", i, param) if param else ("stages", i)
            what = f"{param}: {c!r} names a column" if param else f"stage {st.name} needs column {c!r}"
            issues.append(ConfigIssue(
                _fmt_path(loc), f"{what} that neither ingest nor an earlier stage adds (stage {st.name})",
                _producers_hint(c) or f"columns available here: {', '.join(sorted(ingested | set(added)))}",
                _node_line(node, loc)))
        twice = [c for c in cols.outputs if c in added]
        if twice:  # a second copy of a column would be ambiguous in every later stage and the output
            issues.append(ConfigIssue(
                f"stages[{i}]", f"stage {st.name} adds column(s) {twice} that stages[{added[twice[0]]}] already added",
                "keep one of the two stages", _node_line(node, ("stages", i))))
        added.update({c: i for c in cols.outputs if c not in ingested})
    if raw.output.group_column not in ingested | set(added):
        loc = ("output", "group_column")
        issues.append(ConfigIssue(_fmt_path(loc), f"{raw.output.group_column!r} is not a column of the output",
                                  f"columns of the output: {', '.join(sorted(ingested | set(added)))}",
                                  _node_line(node, loc)))
    return issues


def _producers_hint(column: str) -> str:
    """Which registered stage adds `column`, if any: the stage to put before this one."""
    makers = [name for name, cls in registry.available().items() if column in cls.outputs]
    return f"put a stage that adds it ({', '.join(makers)}) before this one" if makers else ""


def load_config(path: str | Path) -> PipelineConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [ConfigIssue("<file>", f"cannot read: {exc.strerror}",
                                                  "check the path")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(str(path), [ConfigIssue(
            "<yaml>", f"not valid YAML: {getattr(exc, 'problem', exc)}",
            "check indentation and quoting near that line", mark.line + 1 if mark else None)]) from None
    twice = _keys_given_twice(node)
    if twice:  # YAML keeps the last silently: a key given twice is an error, never a guess
        raise ConfigError(str(path), twice)
    return parse_config(data, str(path), node, base_dir=path.resolve().parent)


def _keys_given_twice(node: yaml.Node | None, loc: tuple = ()) -> list[ConfigIssue]:
    """Every mapping key of the document given more than once, with the lines of both."""
    issues = []
    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name in first:
                issues.append(ConfigIssue(_fmt_path(loc + (name,)), f"`{name}` is given twice (lines "
                                          f"{first[name]} and {key.start_mark.line + 1})", "keep one of them",
                                          key.start_mark.line + 1))
            elif name is not None:
                first[name] = key.start_mark.line + 1
            issues += _keys_given_twice(value, loc + (name,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            issues += _keys_given_twice(item, loc + (i,))
    return issues
