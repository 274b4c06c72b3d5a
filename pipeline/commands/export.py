"""`thresher export`: tokenize a run's kept rows and pack them into fixed-length training sequences.

Documents are tokenized with a local tokenizer, an EOS appended to each, and concatenated per
group (a sequence never mixes groups, so tokens per group are exact); the stream is cut into
`seq_len` sequences (the last partial one is kept, shorter, and flagged). Writes Parquet shards
with `input_ids` and `group`, or with `fmt="bin"` one `<group>.bin` token stream (uint16 when the
vocabulary fits, else uint32) plus `<group>.idx` (int64 document start offsets) per group, and
export.json with the token counts. Output is written as it is tokenized: memory holds one batch
and less than one sequence per group, whatever the corpus size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from thresher.pipeline.core.files import write_json
from thresher.scorers.tokenizer import load_tokenizer, pack

SEQUENCES = pa.schema([("input_ids", pa.list_(pa.int32())), ("group", pa.string()), ("full", pa.bool_())])


class _GroupOutput:
    """One group's files, appended to batch by batch; renamed into place on close."""

    def __init__(self, dest: Path, group: str, fmt: str, seq_len: int, dtype):
        self.dest, self.group, self.fmt, self.seq_len, self.dtype = dest, group, fmt, seq_len, dtype
        self.tokens = self.documents = 0
        self.carry = np.zeros(0, np.int64)  # tokens not yet in a full sequence (parquet)
        names = (f"{group}.bin", f"{group}.idx") if fmt == "bin" else (f"{group}.parquet",)
        self.paths = [dest / n for n in names]
        if fmt == "bin":
            self.bin, self.idx = (open(p.with_name(p.name + ".tmp"), "wb") for p in self.paths)
        else:
            self.writer = pq.ParquetWriter(self.paths[0].with_name(self.paths[0].name + ".tmp"), SEQUENCES)

    def add(self, stream: np.ndarray, starts: np.ndarray) -> None:
        if self.fmt == "bin":
            stream.astype(self.dtype).tofile(self.bin)
            (starts + self.tokens).tofile(self.idx)
        else:
            self.carry = np.concatenate([self.carry, stream])
            full = len(self.carry) // self.seq_len * self.seq_len
            if full >= 256 * self.seq_len:  # row groups of at least 256 sequences
                self._write(self.carry[:full])
                self.carry = self.carry[full:]
        self.tokens += len(stream)
        self.documents += len(starts)

    def _write(self, tokens: np.ndarray) -> None:
        """Cut into seq_len sequences; only a last, shorter one is not `full`."""
        n = -(-len(tokens) // self.seq_len)
        offsets = np.minimum(np.arange(n + 1, dtype=np.int64) * self.seq_len, len(tokens)).astype(np.int32)
        seqs = pa.ListArray.from_arrays(pa.array(offsets), pa.array(tokens.astype(np.int32)))
        full = pa.array(np.diff(offsets) == self.seq_len)
        self.writer.write_table(pa.table([seqs, pa.repeat(self.group, n), full], schema=SEQUENCES))

    def close(self) -> dict:
        if self.fmt == "bin":
            self.bin.close()
            self.idx.close()
        else:
            if len(self.carry):
                self._write(self.carry)
            self.writer.close()
        for p in self.paths:
            os.replace(p.with_name(p.name + ".tmp"), p)
        return {"tokens": self.tokens, "documents": self.documents, "sequences": -(-self.tokens // self.seq_len)}


def export(output_dir: str | Path, tokenizer: str, dest: str | Path, seq_len: int = 1024, fmt: str = "parquet",
           batch_rows: int = 1024) -> dict:
    output_dir, dest = Path(output_dir), Path(dest)
    manifest = output_dir / "manifest.json"
    if not manifest.exists():
        raise FileNotFoundError(f"{output_dir} has no manifest.json: give the output dir of a finished run")
    files = sorted((output_dir / "data").glob("*.parquet"))  # none when the run kept no row
    tok = load_tokenizer(tokenizer)
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.pad_token_id
    if eos is None:
        raise ValueError(f"{tokenizer}: the tokenizer has no EOS token to separate documents")
    dtype = np.uint16 if len(tok) <= 65535 else np.uint32
    dest.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, _GroupOutput] = {}
    for f in files:
        for b in pq.read_table(f, columns=["text", "group"]).to_batches(batch_rows):
            ids = tok(b.column(0).to_pylist(), add_special_tokens=False)["input_ids"]
            for g in sorted(pc.unique(b.column(1)).to_pylist()):
                rows = np.flatnonzero(pc.equal(b.column(1), g).to_numpy(zero_copy_only=False))
                if g not in outputs:
                    outputs[g] = _GroupOutput(dest, g, fmt, seq_len, dtype)
                outputs[g].add(*pack([ids[i] for i in rows], eos))
    summary = {"seq_len": seq_len, "format": fmt, "tokenizer": str(tokenizer), "dtype": np.dtype(dtype).name,
               "groups": {g: outputs[g].close() for g in sorted(outputs)}}
    summary["tokens"] = sum(v["tokens"] for v in summary["groups"].values())
    summary["source_manifest"] = json.loads(manifest.read_text()).get("config_hash")
    write_json(summary, dest / "export.json")
    return summary
