"""Unicode NFC and whitespace clean-up, vectorised with Arrow compute kernels."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.pipeline.core import schema
from thresher.pipeline.core.stage import Params, Stage


def normalize_text(text: pa.Array | pa.ChunkedArray, form: str = "NFC") -> pa.Array:
    """NFC (or another form), spaces/tabs collapsed, trailing spaces and blank-line runs trimmed."""
    text = pc.utf8_normalize(text, form)
    text = pc.replace_substring_regex(text, r"\r\n?", "\n")
    text = pc.replace_substring_regex(text, r"[^\S\n]+", " ")  # any whitespace but newline -> one space
    text = pc.replace_substring_regex(text, r" ?\n ?", "\n")
    text = pc.replace_substring_regex(text, r"\n{3,}", "\n\n")
    return pc.utf8_trim_whitespace(text)


class Normalize(Stage):
    """Unicode normalisation and whitespace clean-up of the text.

    `text` is rewritten in place: Unicode normal form `form` (NFC by default), line ends as \\n,
    other whitespace runs as one space, at most one blank line in a row, no space at either end.
    """

    name = "normalize"
    inputs = (schema.TEXT,)
    outputs = (schema.TEXT,)

    class Params(Params):
        form: Literal["NFC", "NFKC", "NFD", "NFKD"] = Field("NFC", description="Unicode normal form")

    def transform(self, table: pa.Table, state=None) -> pa.Table:
        i = table.column_names.index(schema.TEXT)
        return table.set_column(i, schema.TEXT, normalize_text(table[schema.TEXT], self.params.form))
