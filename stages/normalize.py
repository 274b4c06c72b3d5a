"""Unicode NFC and whitespace clean-up, vectorised with Arrow compute kernels."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from thresher.pipeline import schema
from thresher.pipeline.registry import register
from thresher.pipeline.stage import Params, Stage


def normalize_text(text: pa.Array | pa.ChunkedArray, form: str = "NFC") -> pa.Array:
    """NFC (or another form), spaces/tabs collapsed, trailing spaces and blank-line runs trimmed."""
    text = pc.utf8_normalize(text, form)
    text = pc.replace_substring_regex(text, r"\r\n?", "\n")
    text = pc.replace_substring_regex(text, r"[^\S\n]+", " ")  # any whitespace but newline -> one space
    text = pc.replace_substring_regex(text, r" ?\n ?", "\n")
    text = pc.replace_substring_regex(text, r"\n{3,}", "\n\n")
    return pc.utf8_trim_whitespace(text)


@register
class Normalize(Stage):
    name = "normalize"
    inputs = (schema.TEXT,)
    outputs = (schema.TEXT,)

    class Params(Params):
        form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFC"

    def transform(self, table: pa.Table, state=None) -> pa.Table:
        i = table.column_names.index(schema.TEXT)
        return table.set_column(i, schema.TEXT, normalize_text(table[schema.TEXT], self.params.form))
