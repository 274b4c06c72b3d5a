"""Dedup indexes: what a dedup stage of one run leaves so that a later run can remove the documents
that duplicate it (`against:`) without reading the earlier corpus again.

An index is a folder or prefix holding the stage's own files and, written last, index.json: what
built it and with which parameters. An index without it is incomplete and refused, as is one whose
parameters would make its hashes mean something else than the later run's.
"""

from __future__ import annotations

import json

from thresher.pipeline.core import storage
from thresher.pipeline.core.files import InputError, write_json
from thresher.pipeline.core.version import version

META = "index.json"


def clear(folder) -> None:
    """Empties `folder` for a new index: an earlier index there goes, anything else is refused
    (an `index:` pointed at a folder of other files must not delete them)."""
    if not folder.exists():
        return
    if (folder / META).exists() or not storage.tree_files(folder):
        storage.rmtree(folder)
        return
    raise InputError(f"{folder}: `index:` names a folder that holds files but no dedup index ({META}); "
                     "give a new or empty folder")


def write_meta(folder, stage: str, params: dict, **info) -> None:
    """Marks `folder` as a complete index of `stage` built with `params` (which a user of the index
    must share); `info` is stored beside them (its shards, partitions, documents)."""
    write_json({"stage": stage, "params": params, "thresher": version(), **info}, folder / META)


def open_index(uri: str, stage: str, params: dict) -> tuple[object, dict]:
    """(the index's location, its index.json), after checking it is a complete index of `stage`
    built with the same `params`."""
    folder = storage.location(uri)
    meta_path = folder / META
    if not meta_path.exists():
        raise InputError(f"{uri}: not a dedup index (no {META}); `against:` takes the `index:` folder a "
                         f"finished run of {stage} wrote")
    meta = json.loads(meta_path.read_text())
    if meta.get("stage") != stage:
        raise InputError(f"{uri}: an index of {meta.get('stage')}, not of {stage}")
    differ = {k: (meta["params"].get(k), v) for k, v in params.items() if meta["params"].get(k) != v}
    if differ:
        what = ", ".join(f"{k} {old!r} there, {new!r} here" for k, (old, new) in differ.items())
        raise InputError(f"{uri}: built with other parameters ({what}); give this stage the index's "
                         "parameters or rebuild the index")
    return folder, meta
