"""Temperature scaling (Guo et al., 2017): one scalar that makes softmax confidences honest, fitted on validation."""

from __future__ import annotations

import numpy as np

from mpoxscan.numeric import softmax


def fit_temperature(logits: np.ndarray, y_idx: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of ``y_idx`` (searched in log space, 0.05 to 20)."""
    from scipy.optimize import minimize_scalar

    if len(y_idx) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return float(-np.log(np.clip(p[np.arange(len(y_idx)), y_idx], 1e-12, None)).mean())

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))
