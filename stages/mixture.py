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
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.pipeline.core import schema
from thresher.pipeline.core.stage import (
    ColumnName,
    GroupShares,
    LocalPath,
    Params,
    Resources,
    Stage,
    StateRecord,
    lookup,
)
from thresher.scorers.domain_sample import merge_samples, sample_part

PROPORTION = "mixture_proportion"
# torch threads of the proxy runs on a CPU, fixed: a CPU matmul's sums depend on how many threads
# split them, so with a fixed count the mixture is the same whichever machine, executor (inline or
# Ray) or worker trains it; the proxy is small enough that more threads would gain little.
PROXY_CPU_THREADS = 2


class MixtureParams(Params):
    group_column: ColumnName = Field("domain", description="the column whose values are the groups")
    docs_per_group: int = Field(300, ge=10, description="proxy-run sample per group")
    tokenizer: LocalPath | None = Field(None, description="local tokenizer; default: a BPE trained on the sample")
    vocab_size: int = Field(2048, ge=256, description="vocabulary of the BPE trained on the sample")
    seq_len: int = Field(64, ge=8, description="proxy sequence length (tokens)")
    batch_size: int = Field(8, ge=2, description="proxy batch size (sequences)")
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
    lr: float = Field(3e-3, gt=0.0, description="proxy learning rate")
    proxy_size: Literal["tiny", "small"] = Field("tiny", description="proxy model (small: worth a GPU)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the proxy trains; auto: a GPU when "
                                                  "there is one (the stage then asks for one)")


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


class Mixture(Stage):
    """Group proportions from an Aioli proxy run; each group's total weight becomes its proportion.

    Aioli (Chen et al. 2024): a
    seeded sample per group (`group_column`) trains a tiny proxy LM twice from the same seed, once at
    stratified proportions and once under Aioli (the reference trainer's rule: rounds of sweeps over
    the groups at a mix focused on one group; A = Q^-1 B from the validation-loss drops; an
    exponentiated-gradient step on the proportions). The mixture is the mean proportions of the last
    half of the rounds. The proxy runs train as one task with this stage's resources. It writes
    `mixture.json` (proportions and A per round, both runs' validation losses), and every output row's
    `weight` is scaled within its group so the group's total equals its proportion. A group too small
    to fill the proxy's sequences keeps its stratified share.
    """

    name = "mixture"
    example = {"group_column": "domain"}
    inputs = (schema.ID, schema.TEXT)
    outputs = (PROPORTION,)
    Params = MixtureParams
    State = MixturePlan

    @classmethod
    def resources_for(cls, params: MixtureParams) -> Resources:
        """A GPU for the proxy runs when they train on one (device cuda, or auto on a machine that has one)."""
        if params.device == "auto":
            import torch

            return replace(cls.resources, gpus=1.0 if torch.cuda.is_available() else 0.0)
        return replace(cls.resources, gpus=1.0 if params.device == "cuda" else 0.0)

    def _groups(self, table: pa.Table) -> pa.Array:
        return pc.cast(table[self.params.group_column], pa.string())

    def partial(self, table: pa.Table) -> dict:
        """Per group: its size and the docs_per_group rows with the smallest id hashes."""
        return sample_part(self._groups(table), table[schema.ID], table[schema.TEXT], self.params.docs_per_group)

    def merge(self, parts: list[dict]) -> MixturePlan:
        """The proxy runs on the merged sample; the engine runs this as a task with the stage's
        resources (its GPU with `device: cuda`), never in the driver."""
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
                      size=size, device=p.device, cpu_threads=PROXY_CPU_THREADS)
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

    def group_shares(self, state: MixturePlan) -> GroupShares:
        """Each group's final weight sums to its mixture proportion (mixture.json holds the run)."""
        return GroupShares(self.params.group_column, dict(zip(state.groups, state.proportions)),
                           "mixture.json", state.report)

    def transform(self, table: pa.Table, state: MixturePlan) -> pa.Table:
        p = dict(zip(state.groups, state.proportions))
        return table.append_column(PROPORTION, pa.array(lookup(self._groups(table), p)))
