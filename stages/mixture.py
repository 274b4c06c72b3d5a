"""Group proportions from an Aioli proxy run (Chen et al. 2024), and the weighted mixture.

Global pass: a deterministic sample of documents per group (smallest id hashes), a byte-level
BPE on it, then two proxy runs from the same seed: the stratified baseline (proportions = group
sizes) and Aioli (scorers/aioli.py, the reference trainer's rule). The mixture is the Aioli run's
static mixture (the mean proportions of its last half of rounds). mixture.json records the
proportions and A per round, the last round's proportions, the mixture and both runs' validation
losses. Every output row's `weight` is then normalised within its group so the group's total
equals its proportion.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.pipeline import schema
from thresher.pipeline.output import lookup
from thresher.pipeline.registry import register
from thresher.pipeline.stage import ColumnName, GroupShares, LocalPath, Params, Stage, StateRecord
from thresher.scorers.domain_sample import merge_samples, sample_part

PROPORTION = "mixture_proportion"


class MixtureParams(Params):
    group_column: ColumnName = "domain"
    docs_per_group: int = Field(300, ge=10, description="proxy-run sample per group")
    tokenizer: LocalPath | None = Field(None, description="local tokenizer; default: a BPE trained on the sample")
    vocab_size: int = Field(2048, ge=256)
    seq_len: int = Field(64, ge=8)
    batch_size: int = Field(8, ge=2)
    steps: int = Field(600, ge=10, description="proxy training steps (each run)")
    round_steps: int | None = Field(None, ge=4, description="steps per Aioli round (update_steps); "
                                    "default: twice the learning phase (sweeps x groups x chunk_steps)")
    sweeps: int = Field(4, ge=1, description="sweeps over the groups per round (lp_rounds; reference: 4 or 6)")
    chunk_steps: int = Field(4, ge=1, description="steps per group in a sweep (lp_steps; reference: 4)")
    focus: float = Field(0.625, gt=0.0, lt=1.0, description="share of the focused group (one_hot_factor)")
    eta: float = Field(0.2, gt=0.0, description="exponentiated-gradient step (reference: 0.1, 0.2 or 0.5)")
    ema: float | None = Field(None, ge=0.0, lt=1.0, description="smooth A across rounds (reference: unset)")
    prior_steps: int = Field(0, ge=0, description="steps on the stratified mixture before the first round "
                                                  "(the reference's restricted setting)")
    lr: float = Field(3e-3, gt=0.0)
    proxy_size: Literal["tiny", "small"] = Field("tiny", description="proxy model (small: worth a GPU)")
    device: Literal["auto", "cpu", "cuda"] = "auto"


@dataclass(frozen=True)
class MixturePlan(StateRecord):
    """Each group's proportion, and the proxy run's report (mixture.json): the proportions and
    A estimates per round, the validation losses of Aioli and stratified mixing."""

    groups: list[str]
    proportions: list[float]
    report: dict

    @classmethod
    def of(cls, report: dict) -> "MixturePlan":
        return cls(report["groups"], report["proportions"], report)


@register
class Mixture(Stage):
    name = "mixture"
    inputs = (schema.ID, schema.TEXT)
    outputs = (PROPORTION,)
    Params = MixtureParams
    State = MixturePlan

    def _groups(self, table: pa.Table) -> pa.Array:
        return pc.cast(table[self.params.group_column], pa.string())

    def partial(self, table: pa.Table) -> dict:
        """Per group: its size and the docs_per_group rows with the smallest id hashes."""
        return sample_part(self._groups(table), table[schema.ID], table[schema.TEXT], self.params.docs_per_group)

    def merge(self, parts: list[dict]) -> MixturePlan:
        from thresher.scorers.aioli import AioliMixer
        from thresher.scorers.proxy import GroupData, aioli_schedule, fixed_schedule, proxy_run
        from thresher.scorers.tokenizer import load_tokenizer, train_bpe_tokenizer

        p = self.params
        sample = merge_samples(parts, p.docs_per_group)
        sizes = {g: v["rows"] for g, v in sample.items()}
        groups = sorted(sizes)
        if len(groups) < 2:
            return MixturePlan.of({"groups": groups, "proportions": [1.0] * len(groups), "note": "one group: nothing to mix"})
        texts = {g: sample[g]["texts"] for g in groups}
        total = sum(sizes.values())
        stratified = np.array([sizes[g] / total for g in groups])
        with tempfile.TemporaryDirectory() as tmp:
            tok = load_tokenizer(p.tokenizer) if p.tokenizer else train_bpe_tokenizer(
                [t for g in groups for t in texts[g]], p.vocab_size, tmp)
            data = GroupData(texts, tok, p.seq_len)
        # A group whose sample cannot fill a few proxy sequences keeps its stratified share; the
        # proxy mixes the others within what is left.
        mixed, small = data.groups, data.too_small
        if len(mixed) < 2:
            return MixturePlan.of({"groups": groups, "proportions": stratified.tolist(),
                                   "initial_proportions": stratified.tolist(), "too_small_for_proxy": small,
                                   "note": "fewer than two groups large enough to mix"})
        inside = np.array([sizes[g] for g in mixed], dtype=np.float64)
        inside /= inside.sum()
        from thresher.scorers.reference_lm import SIZES

        size = {k: v for k, v in SIZES[p.proxy_size].items() if k != "n_positions"}
        common = dict(steps=p.steps, batch_size=p.batch_size, vocab_size=len(tok), lr=p.lr, seed=self.seed,
                      size=size, device=p.device)
        baseline = proxy_run(data, fixed_schedule(inside), **common)
        round_steps = p.round_steps or 2 * p.sweeps * len(mixed) * p.chunk_steps
        if p.prior_steps + round_steps > p.steps:
            raise ValueError(f"mixture: {p.steps} proxy steps cannot hold {p.prior_steps} prior steps and one Aioli "
                             f"round of {round_steps} steps: raise `steps`, or lower `round_steps`, `sweeps` or "
                             "`chunk_steps`")
        mixer = AioliMixer(mixed, sweeps=p.sweeps, chunk_steps=p.chunk_steps, focus=p.focus, eta=p.eta,
                           round_steps=round_steps, ema=p.ema, prior=inside if p.prior_steps else None,
                           prior_steps=p.prior_steps, seed=self.seed)
        aioli = proxy_run(data, aioli_schedule(mixer), **common)
        share = 1.0 - sum(sizes[g] / total for g in small)

        def over_all(q) -> list[float]:
            by = dict(zip(mixed, np.asarray(q) * share))
            return [float(by.get(g, sizes[g] / total)) for g in groups]

        return MixturePlan.of({
            "groups": groups,
            "group_rows": [sizes[g] for g in groups],
            "initial_proportions": stratified.tolist(),
            "proportions_per_round": [stratified.tolist()] + [over_all(h["proportions"]) for h in mixer.history],
            "mixed_groups": mixed,
            "too_small_for_proxy": small,
            "A_per_round": [h["A"] for h in mixer.history],
            "last_round_proportions": over_all(mixer.p),
            "proportions": over_all(mixer.mixture()),
            "round_steps": round_steps,
            "validation": {"stratified": baseline, "aioli": aioli},
            "proxy": {k: v for k, v in p.model_dump().items() if k != "tokenizer"},
        })

    def summarize_state(self, state: MixturePlan) -> dict:
        return state.report

    def group_shares(self, summary: dict | None) -> GroupShares:
        """Each group's final weight sums to its mixture proportion (mixture.json holds the run)."""
        return GroupShares(self.params.group_column, dict(zip(summary["groups"], summary["proportions"])),
                           "mixture.json", summary)

    def transform(self, table: pa.Table, state: MixturePlan) -> pa.Table:
        p = dict(zip(state.groups, state.proportions))
        return table.append_column(PROPORTION, pa.array(lookup(self._groups(table), p)))
