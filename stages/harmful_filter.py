"""Harmful-content filter by perplexity ("Perplexed by Quality", Jansen et al. 2022).

A KenLM model trained only on harmful text finds harmful documents *likely*: a document is
harmful when its perplexity under that model is BELOW tau. tau is given, or chosen from data:
the valley between the two modes of log-perplexity over the corpus, or the best macro-F1 on a
labelled validation file (JSONL with the text and a 0/1 label).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from thresher.pipeline.core import schema
from thresher.pipeline.core.files import json_records
from thresher.pipeline.core.stage import FitContext, LocalPath, Params, Stage, StateRecord, mark_dropped
from thresher.scorers.kenlm_model import document_perplexity
from thresher.scorers.thresholds import best_f1_threshold, valley_threshold


class HarmfulParams(Params):
    model: LocalPath = Field(description="KenLM model (.bin or .arpa) trained on harmful text only")
    tau: float | None = Field(None, gt=0, description="perplexity threshold; set tau_method: given")
    tau_method: Literal["given", "valley", "f1"] = Field(
        "valley", description="given (`tau`), valley (minimum of the corpus's log-perplexity histogram) or f1 "
        "(best macro-F1 on the `validation` file)")
    validation: LocalPath | None = Field(None, description="labelled JSONL for tau_method: f1")
    text_field: str = Field("text", description="the text field of the `validation` file")
    label_field: str = Field("label", description="the 0/1 label field of the `validation` file (1: harmful)")
    action: Literal["remove", "flag"] = Field(
        "remove", description="remove harmful rows (reason `harmful`), or flag them in `harmful` and keep them")
    split_punctuation: bool = Field(False, description="split punctuation from words, as the model was trained "
                                    "(`train-kenlm --split-punctuation`); CCNet: no")
    empty_lines: Literal["count", "skip"] = Field("count", description="CCNet counts an empty line as one </s>")

    @model_validator(mode="after")
    def _method_inputs(self):
        if self.tau_method == "given" and self.tau is None:
            raise ValueError("tau_method: given needs tau")
        if self.tau_method == "f1" and not self.validation:
            raise ValueError("tau_method: f1 needs a labelled validation file (validation: PATH)")
        return self


def _load(path: str):
    import kenlm

    if not Path(path).exists():
        raise FileNotFoundError(f"KenLM model {path!r} does not exist; train one with `thresher train-kenlm`")
    return kenlm.Model(path)


class _LogPpl:
    def __init__(self, params: HarmfulParams, read):
        self.params, self.read, self._model = params, read, None

    def __call__(self, shard: str) -> np.ndarray:
        self._model = self._model or _load(self.params.model)
        texts = self.read(shard, columns=[schema.TEXT])[schema.TEXT]
        return np.log10(_perplexity(self._model, texts, self.params))


def _perplexity(model, texts, p: HarmfulParams) -> np.ndarray:
    return document_perplexity(model, texts, p.split_punctuation, p.empty_lines)


def read_labelled(path: str, text_field: str = "text", label_field: str = "label") -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for lineno, row in json_records(path):
        try:
            if not isinstance(row[text_field], str):
                raise TypeError(f"{text_field!r} is not a string")
            texts.append(row[text_field])
            labels.append(bool(int(row[label_field])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{lineno}: need JSON with {text_field!r} and a 0/1 {label_field!r} "
                             f"({exc})") from None
    return texts, np.array(labels, dtype=bool)


@dataclass(frozen=True)
class HarmThreshold(StateRecord):
    """tau: a document is harmful when its perplexity under the harmful-text model is below it
    (None: no documents to judge); how it was chosen, with that method's figure."""

    tau: float | None
    method: str
    validation_macro_f1: float | None = None
    documents: int | None = None


class HarmfulFilter(Stage):
    """Drops or flags harmful documents: perplexity below tau under a KenLM model of harmful text.

    "Perplexed by Quality" (Jansen et al. 2022): a KenLM
    model trained only on harmful text (`thresher train-kenlm`) finds harmful documents likely, so a
    document is harmful when its perplexity under that model is BELOW tau. Perplexity is CCNet's
    (cc_net's text normalisation per line, every line scored with <s> and </s>); an empty document
    gets none and is never harmful. tau is given, the valley of the corpus's log-perplexity
    histogram, or the best macro-F1 on a labelled JSONL `validation` file. Adds `harm_ppl` and
    `harmful`; `action: remove` drops harmful rows as `harmful`, `flag` keeps them.
    """

    name = "harmful_filter"
    example = {"model": "models/harm.bin"}
    drop_reasons = ("harmful",)
    inputs = (schema.TEXT,)
    outputs = ("harm_ppl", "harmful")
    Params = HarmfulParams
    State = HarmThreshold

    def fit(self, ctx: FitContext) -> HarmThreshold:
        p = self.params
        if p.tau_method == "given":
            return HarmThreshold(p.tau, "given")
        if p.tau_method == "f1":
            texts, labels = read_labelled(p.validation, p.text_field, p.label_field)
            tau, f1 = best_f1_threshold(_perplexity(_load(p.model), texts, p), labels)
            return HarmThreshold(tau, "f1", validation_macro_f1=f1)
        logs = np.concatenate(list(ctx.map(_LogPpl(p, ctx.reader()), ctx.shards)) or [np.array([])])
        if not len(logs):  # no documents: nothing to judge, no threshold to find
            return HarmThreshold(None, "valley", documents=0)
        return HarmThreshold(10.0 ** valley_threshold(logs), "valley")

    def summarize_state(self, state: HarmThreshold) -> dict:
        return {k: v for k, v in asdict(state).items() if v is not None or k == "tau"}

    def setup(self) -> None:
        self.model = _load(self.params.model)

    def transform(self, table: pa.Table, state: dict) -> pa.Table:
        ppl = _perplexity(self.model, table[schema.TEXT], self.params)
        harmful = np.nan_to_num(ppl, nan=np.inf) < (state.tau if state.tau is not None else -np.inf)
        table = table.append_column("harm_ppl", pa.array(ppl)).append_column("harmful", pa.array(harmful))
        return mark_dropped(table, harmful, "harmful") if self.params.action == "remove" else table
