"""How far an exported variant (fp16, int8) strays from the fp32 model it came from, and the gate it must pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def compare(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """Top-1 agreement, accuracies and probability differences of two (N, classes) probability arrays."""
    ref, cand = reference.argmax(1), candidate.argmax(1)
    diff = np.abs(reference - candidate)
    out = {"images": int(len(ref)), "agreement": float(np.mean(ref == cand)) if len(ref) else float("nan"),
           "max_probability_difference": float(diff.max()) if diff.size else 0.0,
           "mean_probability_difference": float(diff.mean()) if diff.size else 0.0}
    if labels is not None and len(labels):
        out["accuracy_reference"] = float(np.mean(ref == labels))
        out["accuracy"] = float(np.mean(cand == labels))
        out["accuracy_drop_points"] = 100 * (out["accuracy_reference"] - out["accuracy"])
    return out


@dataclass(frozen=True)
class Gate:
    """What a variant must reach against fp32 on held-out images before it is written."""

    min_agreement: float = 0.99
    max_accuracy_drop: float = 1.0  # percentage points

    def failures(self, result: dict) -> list[str]:
        reasons = []
        if not result["agreement"] >= self.min_agreement:
            reasons.append(f"top-1 agreement with fp32 {100 * result['agreement']:.1f} % < {100 * self.min_agreement:.1f} %")
        if result.get("accuracy_drop_points", 0.0) > self.max_accuracy_drop:
            reasons.append(f"accuracy drop {result['accuracy_drop_points']:.1f} points > {self.max_accuracy_drop:g}")
        return reasons
