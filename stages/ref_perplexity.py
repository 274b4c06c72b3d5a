"""Reference-model perplexity (Ankner et al. 2024): score every document with a small causal LM.

Runs in long-lived workers (`num_gpus` per worker on a GPU cluster) that load the
model once. Documents of the reference model's own training split (`reference_ids.parquet`,
written by `thresher train-reference`) are dropped with reason `reference_split`, so the model
never scores the text it was trained on.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from thresher.pipeline.core import schema
from thresher.pipeline.core.stage import LocalPath, Params, Resources, Stage, mark_dropped
from thresher.scorers.reference_lm import REFERENCE_IDS


class RefPerplexityParams(Params):
    model: LocalPath = Field(description="local folder of a Hugging Face causal LM + tokenizer, or a .gguf file "
                                         "(dequantised once into $THRESHER_CACHE)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: a GPU when the worker has one")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on a GPU, float32 on a CPU")
    batch_tokens: int | None = Field(None, gt=0, description="tokens per forward batch (padding included); "
                                     "default 1,024 on a CPU, 32,768 on a GPU")
    max_length: int | None = Field(None, gt=1, description="window length; default: the model's context")
    num_gpus: float | None = Field(None, ge=0, description="per worker; default 1 when scoring on a GPU")
    exclude_reference: bool = Field(True, description="drop the model's own training documents "
                                    "(reference_ids.parquet beside it) as reference_split")


class RefPerplexity(Stage):
    """Scores every document with a reference causal LM: perplexity and bits per byte.

    Ankner et al. 2024: the model is a local Hugging Face
    causal LM (a folder, or a GGUF file dequantised once into $THRESHER_CACHE): [bos] + tokens in
    windows of the model's context overlapping by one token (every token predicted once),
    length-sorted and packed under a token budget; bf16 + SDPA on a GPU, fp32 on a CPU. Adds
    `ref_ppl`, `ref_bpb` (bits per UTF-8 byte: comparable across tokenizers) and `ref_tokens`. The
    model's own training documents (`thresher train-reference` saves their ids beside it) are
    dropped as `reference_split` rather than scored. The model loads once per worker.
    """

    name = "ref_perplexity"
    example = {"model": "models/ref"}
    drop_reasons = ("reference_split",)
    inputs = (schema.ID, schema.TEXT)
    outputs = ("ref_ppl", "ref_bpb", "ref_tokens")
    Params = RefPerplexityParams
    resources = Resources(cpus=1.0)  # the model loads once per worker (setup)

    @classmethod
    def resources_for(cls, params: RefPerplexityParams) -> Resources:
        """A GPU share when scoring on a GPU (device cuda, or auto on a machine that has one)."""
        if params.num_gpus is not None:
            return replace(cls.resources, gpus=params.num_gpus)
        if params.device == "auto":
            import torch

            return replace(cls.resources, gpus=1.0 if torch.cuda.is_available() else 0.0)
        return replace(cls.resources, gpus=1.0 if params.device == "cuda" else 0.0)

    def setup(self) -> None:
        from thresher.scorers.reference_lm import load_reference

        p = self.params
        self.model, self.tokenizer, self.device = load_reference(p.model, p.device, p.dtype)
        ref = Path(p.model) / REFERENCE_IDS
        self.reference_ids = (pq.read_table(ref)[schema.ID] if p.exclude_reference and ref.exists()
                              else pa.array([], pa.string()))

    def transform(self, table: pa.Table, state=None) -> pa.Table:
        from thresher.scorers.reference_lm import score_texts

        excluded = pc.is_in(table[schema.ID], value_set=self.reference_ids).to_numpy(zero_copy_only=False)
        n = table.num_rows
        ppl, bpb, tokens = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, np.int64)
        todo = np.flatnonzero(~excluded)
        if len(todo):
            texts = table[schema.TEXT].take(pa.array(todo)).to_pylist()
            s = score_texts(self.model, self.tokenizer, texts, self.device, self.params.batch_tokens,
                            self.params.max_length)
            ppl[todo], bpb[todo], tokens[todo] = s.ppl, s.bpb, s.tokens
        table = (table.append_column("ref_ppl", pa.array(ppl)).append_column("ref_bpb", pa.array(bpb))
                 .append_column("ref_tokens", pa.array(tokens)))
        return mark_dropped(table, excluded, "reference_split")
