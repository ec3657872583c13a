"""The linear probe (training/linear.py) when a class has no training photo (leave one site out: DermNet NZ alone
has Acne and OtherRash): every class keeps its column, in the probe and in the network it is folded into."""

from __future__ import annotations

import numpy as np
import pytest

from mpoxscan.training.linear import ABSENT_LOGIT, LinearProbe, probe_into_model


def _data(labels: list[int], n: int = 40, dim: int = 1280, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (max(labels) + 1, dim))
    y = np.repeat(labels, n)
    return (centres[y] + rng.normal(0, 0.5, (len(y), dim))).astype(np.float32), y


@pytest.mark.parametrize("present", [[0, 2, 3], [1, 3]])  # several classes, and two (a binary regression)
def test_a_class_without_training_photos_keeps_its_column_and_is_never_answered(present):
    X, y = _data(present)
    probe = LinearProbe(c_grid=(0.01,), n_classes=5).fit(X, y, X[::7], y[::7])
    logits = probe.decision_function(X)
    assert logits.shape == (len(X), 5)
    absent = [c for c in range(5) if c not in present]
    assert np.all(logits[:, absent] == ABSENT_LOGIT)
    assert set(logits.argmax(1)) <= set(present) and (logits.argmax(1) == y).mean() > 0.95
    # Without n_classes: only the classes seen (as before).
    assert LinearProbe(c_grid=(0.01,)).fit(X, y).decision_function(X).shape == (len(X), max(len(present), 2))


def test_the_folded_network_gives_the_probes_probabilities_with_an_absent_class():
    import torch

    from mpoxscan.models import create_model

    model = create_model("mobilenetv2_100", pretrained=False, num_classes=5).eval()
    x = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (6, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        pooled = model.forward_pooled(x).numpy()
    X, y = _data([0, 1, 3], n=20, dim=pooled.shape[1])
    probe = LinearProbe(c_grid=(0.01,), n_classes=5).fit(X, y)
    net = probe_into_model(model, probe)
    with torch.no_grad():
        got = torch.softmax(net(x), 1).numpy()
    want = torch.softmax(torch.from_numpy(probe.decision_function(pooled)), 1).numpy()
    assert got.shape == (6, 5) and np.allclose(got, want, atol=1e-5)
    assert np.all(got[:, [2, 4]] < 1e-9)
