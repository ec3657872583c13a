"""The `linear` strategy: a logistic-regression head on frozen, cached backbone features."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


#: The logit of a class that no training photo had: its probability is about exp(-30) of the top class's, so it is
#: never answered (as a fine-tuned network never answers a class it was not trained on), and a finite constant
#: keeps the exported file's output range, and so its int8 scale, that of the trained classes.
ABSENT_LOGIT = -30.0


@dataclass
class LinearProbe:
    """Standardised features -> multinomial logistic regression with class-balanced weights (scikit-learn).

    ``C`` is chosen from ``c_grid`` by macro-F1 on the validation set given to :meth:`fit`, never on test data.
    """

    c_grid: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1)  # C = 1 never won on MSLD v2.0 and fits 5x slower
    max_iter: int = 3000
    random_state: int = 0
    #: The task's number of classes (labels 0 .. n_classes - 1). A class absent from the training photos (leave one
    #: site out: Acne when DermNet NZ is left out) keeps its column, at :data:`ABSENT_LOGIT`, as a fine-tuned
    #: network keeps its never-trained output; None: the classes seen in training.
    n_classes: int | None = None
    C_: float | None = field(default=None, init=False)

    def _make(self, c: float):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=self.max_iter,
                                                                  random_state=self.random_state))

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None) -> "LinearProbe":
        from sklearn.metrics import f1_score

        if X_val is None or len(self.c_grid) == 1:
            self.C_ = self.c_grid[len(self.c_grid) // 2] if X_val is None else self.c_grid[0]
            self.model_ = self._make(self.C_).fit(X, y)
            return self
        best = -1.0
        for c in self.c_grid:  # each candidate is fitted on the same data: the best one is kept, not refitted
            model = self._make(c).fit(X, y)
            score = f1_score(y_val, model.predict(X_val), average="macro")
            if score > best:
                best, self.C_, self.model_ = score, c, model
        return self

    @property
    def classes_(self) -> np.ndarray:
        return self.model_.classes_

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits (n, n_classes), for temperature scaling (two classes: [0, d], whose softmax is the sigmoid of d);
        a class absent from training at :data:`ABSENT_LOGIT`."""
        d = self.model_.decision_function(X)
        d = np.column_stack([np.zeros_like(d), d]) if d.ndim == 1 else d
        n = self.n_classes or len(self.classes_)
        if n == len(self.classes_):
            return d
        full = np.full((len(d), n), ABSENT_LOGIT, dtype=d.dtype)
        full[:, self.classes_] = d
        return full


def fit_on_split(model_name: str, rows, split, classes: list[str], config, progress: bool = False):
    """Cached features of every row (plain view and ``config.views`` augmented ones), and a probe fitted on all views
    of ``split.train`` with C chosen on the plain view of ``split.valid``: (probe, {view: features})."""
    from mpoxscan.training.features import FeatureCache, extract

    views = list(range(config.views + 1))
    feats = extract(model_name, [(r.path, r.sha256) for r in rows], views, FeatureCache(config.extra.get("cache")),
                    seed=config.seed, progress=progress)
    y = np.array([classes.index(r.label) for r in rows])
    probe = LinearProbe(random_state=config.seed, n_classes=len(classes))
    probe.fit(np.concatenate([feats[v][split.train] for v in views]), np.concatenate([y[split.train]] * len(views)),
              feats[0][split.valid], y[split.valid])
    return probe, feats


def probe_into_model(model, probe):
    """Fold the StandardScaler and the logistic regression into the backbone's own linear classifier, so that
    the checkpoint is one plain network (and exports as one ONNX graph)."""
    import torch

    scaler, lr = probe.model_.named_steps["standardscaler"], probe.model_.named_steps["logisticregression"]
    w = lr.coef_ / scaler.scale_[None, :]
    b = lr.intercept_ - w @ scaler.mean_
    if w.shape[0] == 1:
        # Binary: logits [-d/2, d/2]; the softmax equals that of LinearProbe.decision_function's [0, d], and each
        # class keeps its own evidence (a class with all-zero weights would have an empty activation map).
        w, b = np.vstack([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
    n = probe.n_classes or w.shape[0]
    if n != w.shape[0]:  # classes absent from training: zero weights, the constant logit of decision_function
        present = probe.classes_
        w_all, b_all = np.zeros((n, w.shape[1])), np.full(n, ABSENT_LOGIT)
        w_all[present], b_all[present] = w, b
        w, b = w_all, b_all
    layer = model.reset_classifier(w.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w).float())
        layer.bias.copy_(torch.from_numpy(b).float())
    return model.eval()
