"""Perplexity-correlation domain weights (Thrush et al. 2024, package `perplexity-correlations`).

Inputs: a bits-per-byte matrix (N models x D domains, from `thresher bpb-matrix`) and a benchmark
CSV (model, error = 1 - accuracy). The per-domain correlation of bpb with error (spearman, or
sign_cdf) is projected with the package's linear projection under per-domain caps
tau_i = (bytes_i / total) / rate: the best-ranked domains are taken whole until the budget is
full. A row's `pc_weight` is its domain's projected share over the domain's share of the corpus
(so the weighted corpus follows the projection). Documents of domains the matrix does not cover
are scored by a fastText classifier trained on pages of included vs excluded domains: `pc_prob`
= P(include), and their `pc_weight` = pc_prob x the mean weight of the included domains.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from thresher.pipeline.core import schema
from thresher.pipeline.core.stage import LocalPath, Params, Stage, StateRecord, lookup
from thresher.scorers.domain_classifier import DomainClassifier
from thresher.scorers.domain_sample import merge_samples, sample_part


def read_matrix(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """(models, domains, X[N, D]) from a bpb-matrix Parquet file."""
    t = pq.read_table(path)
    if "model" not in t.column_names:
        raise ValueError(f"{path}: not a bpb matrix (no `model` column); write one with `thresher bpb-matrix`")
    domains = [c for c in t.column_names if c != "model"]
    X = np.column_stack([t[d].to_numpy(zero_copy_only=False).astype(np.float64) for d in domains])
    return t["model"].to_pylist(), domains, X


def read_benchmark(path: str | Path, models: list[str]) -> np.ndarray:
    errors = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                errors[row["model"]] = float(row["error"])
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{path}: each row needs `model` and a numeric `error` ({exc})") from None
    missing = [m for m in models if m not in errors]
    if missing:
        raise ValueError(f"{path}: no benchmark error for model(s) {missing}; the CSV's `model` column must "
                         "name every model of the bpb matrix")
    return np.array([errors[m] for m in models])


def domain_weights(X: np.ndarray, y: np.ndarray, domain_bytes: np.ndarray, rate: float,
                   estimator: str = "spearman") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, projected sampling distribution, per-row weight multiplier) per domain."""
    from perplexity_correlations.estimation import sign_cdf, spearmanr
    from perplexity_correlations.projection import linear

    estimate = {"spearman": spearmanr, "sign_cdf": sign_cdf}[estimator](X, y)
    share = domain_bytes / domain_bytes.sum()
    projected = linear(estimate, share / rate).astype(np.float64)
    return estimate, projected, projected / share


@dataclass(frozen=True)
class DomainWeights(StateRecord):
    """The matrix's domains with their estimate and projected share, each domain's weight
    multiplier, and for documents of other domains the classifier (None when no domain was
    excluded) and the mean weight of the included domains."""

    domains: list[str]
    estimate: list[float]
    projected: list[float]
    weights: dict[str, float]
    classifier: DomainClassifier | None
    included_mean_weight: float


class PplCorrelation(Stage):
    """Domain weights from perplexity correlations with a benchmark (Thrush et al. 2024).

    The `perplexity-correlations` package's estimators: from a bits-per-byte matrix of many models over the domains (`thresher bpb-matrix`) and
    a benchmark CSV (model, error), the per-domain correlation of bpb with error is projected under
    per-domain caps tau_i = (bytes_i / total) / rate with the package's linear projection. A row's
    `pc_weight` is its domain's projected share over the domain's share of the corpus. Domains the
    matrix does not cover are scored by a fastText classifier trained on pages of included vs
    excluded domains: `pc_prob` = P(include), their `pc_weight` = pc_prob x the mean weight of the
    included domains.
    """

    name = "ppl_correlation"
    example = {"matrix": "models/bpb.parquet", "benchmark": "models/benchmark.csv", "rate": 0.5}
    inputs = (schema.ID, schema.TEXT, schema.DOMAIN)
    outputs = ("pc_weight", "pc_prob")
    weights = ("pc_weight",)
    State = DomainWeights

    class Params(Params):
        matrix: LocalPath = Field(description="bits-per-byte matrix Parquet (thresher bpb-matrix)")
        benchmark: LocalPath = Field(description="CSV with columns model, error")
        estimator: Literal["spearman", "sign_cdf"] = Field(
            "spearman", description="the package's correlation estimator of bpb with benchmark error")
        rate: float = Field(0.5, gt=0.0, le=1.0, description="share of the corpus the projection may select")
        pages_per_domain: int = Field(200, ge=5, description="pages per domain for the fastText classifier")
        seed: int = Field(0, description="seed of the classifier's page sample and training")

    def partial(self, table: pa.Table) -> dict:
        return sample_part(table[schema.DOMAIN], table[schema.ID], table[schema.TEXT], self.params.pages_per_domain)

    def merge(self, parts: list[dict]) -> DomainWeights:
        p = self.params
        models, domains, X = read_matrix(p.matrix)
        y = read_benchmark(p.benchmark, models)
        corpus = merge_samples(parts, p.pages_per_domain)
        nbytes = np.array([corpus.get(d, {}).get("bytes", 0) for d in domains], dtype=np.float64)
        if nbytes.sum() == 0 and corpus:  # (an empty corpus has nothing to weight: no error)
            raise ValueError(f"none of the matrix's domains {domains} occurs in the corpus's `domain` column")
        nbytes = np.maximum(nbytes, 1.0)  # a domain absent here can still be ranked, with a tiny cap
        estimate, projected, multiplier = domain_weights(X, y, nbytes, p.rate, p.estimator)
        included = [d for d, w in zip(domains, projected) if w > 0]
        excluded = [d for d, w in zip(domains, projected) if w == 0]
        pages = lambda ds: [t for d in ds for t in corpus.get(d, {}).get("texts", [])]  # noqa: E731
        classifier = None
        if pages(included) and pages(excluded):
            classifier = DomainClassifier.train(pages(included), pages(excluded), seed=p.seed)
        weights = dict(zip(domains, multiplier.tolist()))
        return DomainWeights(domains, estimate.tolist(), projected.tolist(), weights, classifier,
                             float(np.mean([weights[d] for d in included])) if included else 0.0)

    def summarize_state(self, state: DomainWeights) -> dict:
        return {"domains": state.domains, "estimate": state.estimate, "projected": state.projected,
                "weights": state.weights}

    def transform(self, table: pa.Table, state: DomainWeights) -> pa.Table:
        n = table.num_rows
        clf = state.classifier
        prob = clf.prob_include(table[schema.TEXT].to_pylist()) if clf is not None else np.full(n, np.nan)
        # Unseen domains: P(include) x the mean included weight; with no excluded domain to learn
        # from there is no classifier, and they get the mean included weight.
        unseen = state.included_mean_weight * (prob if clf is not None else np.ones(n))
        known = lookup(table[schema.DOMAIN], state.weights, default=np.nan)
        weight = np.where(np.isnan(known), unseen, known)
        return table.append_column("pc_weight", pa.array(weight)).append_column("pc_prob", pa.array(prob))
