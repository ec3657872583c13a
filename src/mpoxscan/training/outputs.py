"""What a training strategy returns for one fold: below the strategies and the runner that calls them (cv.py), so
that the imports run one way (strategies -> outputs, cv -> strategies)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FoldOutput:
    logits_test: np.ndarray
    logits_valid: np.ndarray
    info: dict
    model: object = None  # the trained network, when config.exports asks for it
    # Other predictions of the same fold, {suffix: (logits_test, logits_valid)}, each calibrated on its own and saved
    # as <stem>__<suffix>: e.g. with and without TTA, or a distillation's teachers.
    extra_outputs: dict = field(default_factory=dict)
