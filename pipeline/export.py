"""`thresher export`: tokenize a run's kept rows and pack them into fixed-length training sequences.

Documents are tokenized with a local tokenizer, an EOS appended to each, and concatenated per
group (a sequence never mixes groups, so tokens per group are exact); the stream is cut into
`seq_len` sequences (the last partial one is kept, shorter, and flagged). Writes Parquet shards
with `input_ids` and `group`, or with `fmt="bin"` one `<group>.bin` token stream (uint16 when the
vocabulary fits, else uint32) plus `<group>.idx` (int64 document start offsets) per group, and
export.json with the token counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from thresher.pipeline.io import write_json, write_parquet
from thresher.scorers.tokenizer import load_tokenizer


def pack(ids: list[list[int]], eos: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(token stream with EOS after each document, document start offsets)."""
    lengths = np.array([len(x) + 1 for x in ids], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(ids) else np.empty(0, np.int64)
    stream = np.fromiter((t for x in ids for t in (*x, eos)), dtype=np.int64, count=int(lengths.sum()))
    return stream, starts


def export(output_dir: str | Path, tokenizer: str, dest: str | Path, seq_len: int = 1024, fmt: str = "parquet",
           batch_rows: int = 1024) -> dict:
    output_dir, dest = Path(output_dir), Path(dest)
    files = sorted((output_dir / "data").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{output_dir}/data has no Parquet shards: give the output dir of a finished run")
    tok = load_tokenizer(tokenizer)
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.pad_token_id
    if eos is None:
        raise ValueError(f"{tokenizer}: the tokenizer has no EOS token to separate documents")
    dtype = np.uint16 if len(tok) <= 65535 else np.uint32
    streams: dict[str, list[np.ndarray]] = {}
    starts: dict[str, list[np.ndarray]] = {}
    offsets: dict[str, int] = {}
    docs: dict[str, int] = {}
    for f in files:
        table = pq.read_table(f, columns=["text", "group"])
        for b in table.to_batches(batch_rows):
            groups = b.column(1).to_pylist()
            ids = tok(b.column(0).to_pylist(), add_special_tokens=False)["input_ids"]
            for g in sorted(set(groups)):
                sel = [x for x, gg in zip(ids, groups) if gg == g]
                stream, st = pack(sel, eos, seq_len)
                streams.setdefault(g, []).append(stream)
                starts.setdefault(g, []).append(st + offsets.get(g, 0))
                offsets[g] = offsets.get(g, 0) + len(stream)
                docs[g] = docs.get(g, 0) + len(sel)
    dest.mkdir(parents=True, exist_ok=True)
    summary = {"seq_len": seq_len, "format": fmt, "tokenizer": str(tokenizer), "dtype": np.dtype(dtype).name,
               "groups": {}}
    for g in sorted(streams):
        stream = np.concatenate(streams[g])
        if fmt == "bin":
            stream.astype(dtype).tofile(dest / f"{g}.bin")
            np.concatenate(starts[g]).astype(np.int64).tofile(dest / f"{g}.idx")
        else:
            n_full = len(stream) // seq_len
            seqs = [stream[i * seq_len:(i + 1) * seq_len] for i in range(n_full)]
            if len(stream) % seq_len:
                seqs.append(stream[n_full * seq_len:])
            table = pa.table({"input_ids": pa.array([s.tolist() for s in seqs], pa.list_(pa.int32())),
                              "group": pa.array([g] * len(seqs), pa.string()),
                              "full": pa.array([len(s) == seq_len for s in seqs])})
            write_parquet(table, dest / f"{g}.parquet")
        summary["groups"][g] = {"tokens": int(len(stream)), "documents": docs[g],
                                "sequences": int(-(-len(stream) // seq_len))}
    summary["tokens"] = sum(v["tokens"] for v in summary["groups"].values())
    manifest = output_dir / "manifest.json"
    if manifest.exists():
        summary["source_manifest"] = json.loads(manifest.read_text()).get("config_hash")
    write_json(summary, dest / "export.json")
    return summary
