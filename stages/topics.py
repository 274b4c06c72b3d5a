"""Topics and per-topic weights (ToReMi, Zhu et al. 2025).

Global pass: a deterministic sample of documents (smallest id hashes) is embedded, with a local
sentence-embedding model when one is configured (mean-pooled last hidden states), otherwise
hashed TF-IDF + truncated SVD; MiniBatchKMeans clusters the embeddings, and each cluster is labelled
with its top TF-IDF terms. Per-topic weights come from the per-topic mean of a reference loss
column (e.g. ref_bpb) with ToReMi's update from w = 1:
  stage 1: w <- min(w * L_t / mean L, w_max) for topics whose loss is above the mean;
  stage 2: w <- clip(w * (2 - L_t / mean L), w_min, w_max).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.pipeline.core import schema
from thresher.pipeline.core.stage import ColumnName, LocalPath, Params, Stage, StateRecord
from thresher.scorers.domain_sample import merge_samples, sample_part

_ALL = "all"


class TopicsParams(Params):
    k: int = Field(8, ge=2, description="number of topics")
    sample: int = Field(20_000, ge=10, description="documents the clustering is fitted on")
    svd_dim: int = Field(64, ge=2, description="TF-IDF + SVD embedding dimensions")
    max_features: int = Field(50_000, ge=100, description="vocabulary for the topic labels")
    hash_features: int = Field(2**18, ge=1024, description="hashed TF-IDF dimensions")
    top_terms: int = Field(4, ge=1, description="terms in a topic's label")
    embedding_model: LocalPath | None = Field(None, description="local HF encoder folder; default TF-IDF + SVD")
    loss_column: ColumnName | None = Field(None, description="per-document reference loss, e.g. ref_bpb")
    toremi_stage: Literal[1, 2] = Field(1, description="ToReMi's update: 1 raises high-loss topics, 2 also "
                                        "lowers low-loss ones")
    w_min: float = Field(0.2, gt=0.0, description="lowest topic weight (stage 2)")
    w_max: float = Field(5.0, gt=0.0, description="highest topic weight")
    seed: int = Field(0, description="seed of the sample and the clustering")


def toremi_weights(losses: np.ndarray, stage: int, w_min: float, w_max: float) -> np.ndarray:
    ratio = losses / losses.mean()
    w = np.ones_like(losses)
    if stage == 1:
        return np.where(ratio > 1.0, np.minimum(w * ratio, w_max), w)
    return np.clip(w * (2.0 - ratio), w_min, w_max)


_TOKENS = r"(?u)\b[^\W\d_]{2,}\b"


def top_terms(texts: list[str], labels: np.ndarray, k: int, n_terms: int, max_features: int) -> list[str]:
    """Each cluster's label: the terms with the highest mean TF-IDF over its documents."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(max_features=max_features, sublinear_tf=True, stop_words="english", token_pattern=_TOKENS)
    x = tfidf.fit_transform(texts)
    terms = np.array(tfidf.get_feature_names_out())
    out = []
    for t in range(k):
        rows = np.flatnonzero(labels == t)
        mean = np.asarray(x[rows].mean(axis=0)).ravel() if len(rows) else np.zeros(len(terms))
        out.append(" ".join(terms[np.argsort(-mean)[:n_terms]]))
    return out


class _Embedder:
    def __init__(self, p: TopicsParams):
        self.p = p

    def fit(self, texts: list[str]) -> "_Embedder":
        """Hashed TF-IDF (no vocabulary to hold or ship to workers) + SVD, fitted on the sample."""
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

        if self.p.embedding_model is None:
            self.hashing = HashingVectorizer(n_features=self.p.hash_features, alternate_sign=False, norm=None,
                                             stop_words="english", token_pattern=_TOKENS)
            self.idf = TfidfTransformer(sublinear_tf=True).fit(self.hashing.transform(texts))
            x = self.idf.transform(self.hashing.transform(texts))
            dim = min(self.p.svd_dim, x.shape[1] - 1, x.shape[0] - 1)
            self.svd = TruncatedSVD(dim, random_state=self.p.seed).fit(x)
        return self

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self.p.embedding_model is None:
            e = self.svd.transform(self.idf.transform(self.hashing.transform(texts)))
        else:
            e = _encode(self.p.embedding_model, texts)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


@lru_cache(maxsize=2)
def _encoder(path: str):
    """(tokenizer, model) of a local encoder, loaded once per process, not once per batch."""
    from transformers import AutoModel

    from thresher.scorers.tokenizer import load_tokenizer

    return load_tokenizer(path), AutoModel.from_pretrained(path, local_files_only=True).eval()


def _encode(path: str, texts: list[str], batch: int = 32) -> np.ndarray:
    """Mean-pooled last hidden states of a local encoder (sentence-transformers style)."""
    import torch

    tok, model = _encoder(path)
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(((h * m).sum(1) / m.sum(1).clamp(min=1)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1))


@dataclass(frozen=True)
class TopicModel(StateRecord):
    """The fitted embedder and k-means (None for an empty corpus), each topic's label and weight,
    and each topic's mean reference loss when the weights came from it (ToReMi)."""

    embedder: Any
    kmeans: Any
    labels: list[str]
    weights: list[float]
    topic_loss: list[float] | None


class Topics(Stage):
    """Topic clusters and per-topic weights (ToReMi).

    ToReMi (Zhu et al. 2025): a seeded sample is embedded (a local
    encoder, mean-pooled, or TF-IDF + truncated SVD), clustered with MiniBatchKMeans (`k`), and each
    topic labelled with its top TF-IDF terms. With `loss_column` (e.g. `ref_bpb`), topic weights
    follow ToReMi from w = 1: stage 1 w <- min(w L_t / mean L, w_max) for topics above the mean loss;
    stage 2 w <- clip(w (2 - L_t / mean L), w_min, w_max). Adds `topic`, `topic_label` and the weight
    `topic_weight`.
    """

    name = "topics"
    example = {"k": 8, "loss_column": "ref_bpb"}
    inputs = (schema.ID, schema.TEXT)
    outputs = ("topic", "topic_label", "topic_weight")
    weights = ("topic_weight",)
    Params = TopicsParams
    State = TopicModel

    def partial(self, table: pa.Table) -> dict:
        p = self.params
        part = sample_part(pa.repeat(_ALL, table.num_rows), table[schema.ID], table[schema.TEXT], p.sample)
        if p.loss_column and part:
            picks = part[_ALL][2]
            rows = pc.index_in(pa.array([i for _, i, _ in picks], pa.string()), value_set=table[schema.ID])
            loss = table[p.loss_column].take(rows).to_pylist()
            part[_ALL][2] = [(h, i, (t, x)) for (h, i, t), x in zip(picks, loss)]
        return part

    def merge(self, parts: list[dict]) -> TopicModel:
        from sklearn.cluster import MiniBatchKMeans

        p = self.params
        picks = merge_samples(parts, p.sample).get(_ALL, {"texts": []})["texts"]
        texts = [x[0] if p.loss_column else x for x in picks]
        if not texts:  # an empty corpus: no topics, and no row to give one
            return TopicModel(None, None, [], [], None)
        if len(texts) < p.k:
            raise ValueError(f"topics: {len(texts)} documents cannot make {p.k} topics; lower k")
        embedder = _Embedder(p).fit(texts)
        emb = embedder(texts)
        km = MiniBatchKMeans(p.k, random_state=p.seed, n_init=5, batch_size=1024).fit(emb)
        labels = top_terms(texts, km.labels_, p.k, p.top_terms, p.max_features)
        weights = np.ones(p.k)
        topic_loss = None
        if p.loss_column:
            loss = np.array([x[1] for x in picks], dtype=np.float64)
            ok = np.isfinite(loss)
            topic_loss = np.array([loss[ok & (km.labels_ == t)].mean() if np.any(ok & (km.labels_ == t)) else np.nan
                                   for t in range(p.k)])
            topic_loss = np.where(np.isnan(topic_loss), np.nanmean(topic_loss), topic_loss)
            weights = toremi_weights(topic_loss, p.toremi_stage, p.w_min, p.w_max)
        return TopicModel(embedder, km, labels, weights.tolist(), None if topic_loss is None else topic_loss.tolist())

    def summarize_state(self, state: TopicModel) -> dict:
        return {"labels": state.labels, "weights": state.weights, "topic_loss": state.topic_loss}

    def transform(self, table: pa.Table, state: TopicModel) -> pa.Table:
        topic = state.kmeans.predict(state.embedder(table[schema.TEXT].to_pylist())) if table.num_rows \
            else np.zeros(0, np.int64)
        labels = pa.array(state.labels, pa.string()).take(pa.array(topic, pa.int64()))
        weights = np.asarray(state.weights)[topic]
        return (table.append_column("topic", pa.array(topic, pa.int32())).append_column("topic_label", labels)
                .append_column("topic_weight", pa.array(weights, pa.float64())))
