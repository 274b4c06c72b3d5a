import numpy as np
import pyarrow as pa

from thresher.pipeline.core.files import write_parquet
from thresher.pipeline.engine.checkpoint import delta, materialize
from thresher.pipeline.engine.workdir import StageDir


def test_materialize_composes_kept_positions_whether_sliced_or_taken(tmp_path):
    """Stages that keep every row, a prefix, or a reordered subset: each column comes from its last
    writer, through the composed positions (a kept-in-order run is sliced, the rest taken)."""
    base = pa.table({"id": [f"d{i}" for i in range(8)], "text": [f"t{i}" for i in range(8)]})
    chain = [StageDir(tmp_path, k, name, "k") for k, name in enumerate(["ingest", "all", "prefix", "some"])]
    write_parquet(base, chain[0].part("s"))
    steps = [np.arange(8), np.arange(6), np.array([5, 0, 3])]  # positions kept by stages 1, 2, 3
    rows, expected = base, {"id": base["id"].to_pylist(), "text": base["text"].to_pylist()}
    for k, (d, pos) in enumerate(zip(chain[1:], steps), start=1):
        kept = rows.take(pa.array(pos)).append_column(f"c{k}", pa.array([f"{k}:{p}" for p in pos]))
        write_parquet(delta(kept, pos, (f"c{k}",)), d.part("s"))
        rows = kept
        for c in list(expected):
            expected[c] = [expected[c][p] for p in pos]
        expected[f"c{k}"] = [f"{k}:{p}" for p in pos]
        got = materialize(chain[:k + 1], "s")
        assert got.column_names == ["id", "text", *[f"c{j}" for j in range(1, k + 1)]]
        assert got.to_pydict() == expected


def test_own_files_size_row_groups_by_bytes_and_keep_hashes_plain(tmp_path):
    import pyarrow.parquet as pq

    n = 300_000
    table = pa.table({"key": np.random.default_rng(0).integers(0, 2**63, n, dtype=np.uint64),
                      "source": pa.array(["a", "b", "c"] * (n // 3))})
    write_parquet(table, tmp_path / "own.parquet")
    write_parquet(table, tmp_path / "output.parquet", row_group_size=100_000)
    own, output = (pq.ParquetFile(tmp_path / f).metadata for f in ("own.parquet", "output.parquet"))
    assert own.num_rows == output.num_rows == n
    assert own.num_row_groups == 1 and output.num_row_groups == 3  # 4.8 MB: one group; an output's own size
    encodings = own.row_group(0)
    assert "RLE_DICTIONARY" not in encodings.column(0).encodings  # 64-bit hashes: all distinct
    assert "RLE_DICTIONARY" in encodings.column(1).encodings
    assert pq.read_table(tmp_path / "own.parquet").equals(table)
