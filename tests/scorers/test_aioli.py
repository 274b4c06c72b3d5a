import numpy as np
import pytest

from thresher.scorers.aioli import AioliMixer


def _simulate(A_true, steps=2000, noise=0.0, seed=0, **kw):
    rng = np.random.default_rng(seed)
    m = A_true.shape[0]
    mixer = AioliMixer([f"g{i}" for i in range(m)], **kw)
    losses = np.full(m, 10.0)
    for step in range(steps):
        if mixer.wants_losses(step):
            mixer.observe(step, losses + rng.normal(0, noise, m))
        q = mixer.proportions(step)
        assert q.sum() == pytest.approx(1.0) and np.all(q >= 0)
        losses = losses - 1e-3 * A_true @ q  # the linear mixing law, one step
    return mixer


def test_recovers_the_mixing_law_and_the_best_mixture():
    A_true = np.array([[1.0, 0.2, 0.1], [0.3, 0.6, 0.2], [0.4, 0.1, 0.3]])
    mixer = _simulate(A_true, steps=2500)
    A_hat = np.array(mixer.history[0]["A"])
    np.testing.assert_allclose(A_hat, A_true / A_true.max(), rtol=1e-6)
    best = int(np.argmax(A_true.sum(axis=0)))  # group 0 lowers the total loss most per unit of mix
    assert int(np.argmax(mixer.p)) == best and mixer.p[best] > 0.6
    for h in mixer.history:
        assert sum(h["proportions"]) == pytest.approx(1.0)
    assert len(mixer.history) == 10


def test_noisy_losses_still_find_the_best_group():
    A_true = np.array([[0.2, 0.1], [0.1, 0.9]])
    mixer = _simulate(A_true, steps=3000, noise=1e-4, seed=1, sweeps=2, chunk_steps=8, round_steps=100)
    assert int(np.argmax(mixer.p)) == 1


def test_schedule_and_validation():
    mixer = AioliMixer(["a", "b"], sweeps=1, chunk_steps=2, round_steps=10, focus=0.75)
    assert [mixer.wants_losses(s) for s in range(11)] == [True, False, True, False, True] + [False] * 5 + [True]
    np.testing.assert_allclose(mixer.proportions(0), [0.75, 0.25])
    np.testing.assert_allclose(mixer.proportions(2), [0.25, 0.75])
    np.testing.assert_allclose(mixer.proportions(5), [0.5, 0.5])
    with pytest.raises(ValueError, match="shorter than a round"):
        AioliMixer(["a", "b"], sweeps=4, chunk_steps=4, round_steps=32)
    with pytest.raises(ValueError, match="one per group"):
        mixer.observe(0, [1.0])
