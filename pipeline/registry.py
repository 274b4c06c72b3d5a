"""Stage names usable in YAML. Names resolve only through this table: YAML can never import code."""

from __future__ import annotations

import difflib
import importlib

from thresher.pipeline.stage import Stage

_STAGES: dict[str, type[Stage]] = {}

# Modules that define the built-in stages; importing them fills the table.
_BUILTIN_MODULES = (
    "thresher.stages.normalize",
    "thresher.stages.length_filter",
    "thresher.stages.exact_dedup",
    "thresher.stages.minhash_dedup",
    "thresher.stages.softdedup",
    "thresher.stages.fedrw",
    "thresher.stages.ref_perplexity",
    "thresher.stages.ppl_select",
    "thresher.stages.harmful_filter",
    "thresher.stages.mixture",
    "thresher.stages.ppl_correlation",
    "thresher.stages.topics",
)
_loaded = False


def register(cls: type[Stage]) -> type[Stage]:
    if cls.name in _STAGES and _STAGES[cls.name] is not cls:
        raise ValueError(f"stage name {cls.name!r} registered twice")
    if cls.has_global_pass() and cls.State is None:
        raise TypeError(f"stage {cls.name!r} has a global pass but declares no State record: "
                        "declare `State = <a StateRecord subclass>` and return one from fit / merge")
    _STAGES[cls.name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        _loaded = True


def available() -> dict[str, type[Stage]]:
    _load_builtins()
    return dict(sorted(_STAGES.items()))


def get(name: str) -> type[Stage]:
    stages = available()
    if name not in stages:
        close = difflib.get_close_matches(name, stages, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise KeyError(f"unknown stage {name!r}; {hint}known stages: {', '.join(stages)}")
    return stages[name]
