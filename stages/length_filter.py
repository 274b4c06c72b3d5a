"""Drop documents that are too short or too long, in characters or words."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from thresher.pipeline.core import schema
from thresher.pipeline.core.stage import Params, Stage, mark_dropped


class LengthFilter(Stage):
    """Drops documents that are too short or too long, in characters or words.

    Every row gets its `n_chars` and `n_words` (runs of non-space characters).
    """

    name = "length_filter"
    example = {"min_words": 20, "max_chars": 100000}
    drop_reasons = ("too_short", "too_long")
    inputs = (schema.TEXT,)
    outputs = ("n_chars", "n_words")

    class Params(Params):
        min_chars: int = Field(0, ge=0, description="fewer characters: dropped as too_short")
        max_chars: int | None = Field(None, gt=0, description="more characters: dropped as too_long")
        min_words: int = Field(0, ge=0, description="fewer words (runs of non-space): dropped as too_short")
        max_words: int | None = Field(None, gt=0, description="more words: dropped as too_long")

        @model_validator(mode="after")
        def _ordered(self):
            if self.max_chars is not None and self.max_chars < self.min_chars:
                raise ValueError("max_chars must be >= min_chars")
            if self.max_words is not None and self.max_words < self.min_words:
                raise ValueError("max_words must be >= min_words")
            return self

    def transform(self, table: pa.Table, state=None) -> pa.Table:
        p = self.params
        chars = pc.utf8_length(table[schema.TEXT]).to_numpy(zero_copy_only=False).astype(np.int64)
        words = pc.count_substring_regex(table[schema.TEXT], r"\S+").to_numpy(zero_copy_only=False).astype(np.int64)
        short = (chars < p.min_chars) | (words < p.min_words)
        long = np.zeros_like(short)
        if p.max_chars is not None:
            long |= chars > p.max_chars
        if p.max_words is not None:
            long |= words > p.max_words
        table = table.append_column("n_chars", pa.array(chars, pa.int32()))
        table = table.append_column("n_words", pa.array(words, pa.int32()))
        return mark_dropped(mark_dropped(table, short, "too_short"), long, "too_long")
