"""Stage names usable in YAML. Names resolve only through this table: YAML can never import code.

The built-in stages are found, not listed: every module of the `thresher.stages` package is
imported and each Stage subclass it defines with a `name` is registered. Adding a stage is one
file in stages/ (plus its tests); `register` adds a stage defined elsewhere (a test, a plugin).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil

from thresher.pipeline.core.stage import Stage

STAGES_PACKAGE = "thresher.stages"

_STAGES: dict[str, type[Stage]] = {}
_loaded = False


def register(cls: type[Stage]) -> type[Stage]:
    if cls.name in _STAGES and _STAGES[cls.name] is not cls:
        raise ValueError(f"stage name {cls.name!r} registered twice ({_STAGES[cls.name].__module__} and "
                         f"{cls.__module__}); rename one")
    if cls.has_global_pass() and cls.State is None:
        raise TypeError(f"stage {cls.name!r} has a global pass but declares no State record: "
                        "declare `State = <a StateRecord subclass>` and return one from fit / merge")
    _STAGES[cls.name] = cls
    return cls


def stage_modules() -> list[str]:
    """The modules of the stages package, in name order."""
    package = importlib.import_module(STAGES_PACKAGE)
    return sorted(f"{STAGES_PACKAGE}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
                  if not m.name.startswith("_"))


def _defined_stages(module) -> list[type[Stage]]:
    """The named Stage subclasses a module defines itself (not those it imports)."""
    return [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, Stage) and cls.__module__ == module.__name__ and "name" in vars(cls)]


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for name in stage_modules():
            for cls in _defined_stages(importlib.import_module(name)):
                register(cls)
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
