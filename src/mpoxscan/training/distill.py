"""The `distill` strategy: fold-local teachers (whole networks, `full`) teach the student that ships.

On each fold the teachers are trained on that fold's training photos only, then the student (the cv model, e.g.
EfficientNet-Lite0) learns from the labels and from the teachers' softened outputs on the very same augmented
batch (a consistent teacher: Beyer et al., 2022). The teachers' ensemble is scored on the same test photos, so that
teacher and student are compared under the same folds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mpoxscan.errors import MpoxscanError
from mpoxscan.training.options import refuse_unknown
from mpoxscan.training.full import FullParams


@dataclass(frozen=True)
class DistillParams:
    """The teachers as ``"model@input_size"`` (the best whole-network models of the first GPU probe)."""

    teachers: tuple[str, ...] = ("efficientnet_lite0@320", "efficientnet_lite2@260")
    teacher_epochs: int | None = None  # None: the student's

    def __post_init__(self) -> None:
        if self.teacher_epochs is not None and self.teacher_epochs < 1:
            raise MpoxscanError(f"distill: teacher_epochs must be at least 1, not {self.teacher_epochs}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "DistillParams":
        d = dict(d or {})
        refuse_unknown(cls, d, "distill")
        if "teachers" in d:
            d["teachers"] = tuple(d["teachers"])
        return cls(**d)

    def teacher_specs(self) -> list[tuple[str, int | None]]:
        """[(model name, input size or None)] with each name checked against the zoo."""
        from mpoxscan.models import get_spec

        out = []
        for t in self.teachers:
            name, _, size = t.partition("@")
            get_spec(name)
            if size and not (size.isdigit() and 32 <= int(size) <= 1024):
                raise MpoxscanError(f"distill: teacher '{t}': the input size after @ must be a whole number of pixels "
                                    "from 32 to 1024")
            out.append((name, int(size) if size else None))
        if not out:
            raise MpoxscanError("distill: at least one teacher is needed")
        return out


def ensemble_logits(logits: list[np.ndarray]) -> np.ndarray:
    """The log of the mean softmax of several models: the ensemble's logits (its softmax is their mean)."""
    from mpoxscan.numeric import softmax

    return np.log(np.clip(np.mean([softmax(z) for z in logits], axis=0), 1e-12, None))


def distill_fold(model_name: str, rows, split, classes: list[str], config, progress: bool = False,
                 return_model: bool = False, keep_model: bool = False):
    """Teachers, then the student, on one fold; the student's logits, and the teachers' in ``extra_outputs``."""
    import torch

    from mpoxscan.training.outputs import FoldOutput
    from mpoxscan.training.features import preprocessing_for
    from mpoxscan.training.full import (Teacher, device_images, predict_logits, resolve_device,
                                        train_network)

    student_params = FullParams.from_dict(config.extra.get("full"))
    options = DistillParams.from_dict(config.extra.get("distill"))
    device = resolve_device(student_params.device)
    labels = torch.tensor([classes.index(r.label) for r in rows], device=device)
    teachers, plain, tta, facts = [], [], [], []
    for k, (name, size) in enumerate(options.teacher_specs()):
        epochs = options.teacher_epochs or student_params.epochs
        params = dataclasses.replace(student_params, input_size=size, ema_decay=0.0, epochs=epochs,
                                     head_only_epochs=min(student_params.head_only_epochs, epochs - 1))
        prep = preprocessing_for(name, size)
        images = device_images(rows, prep, device)
        model, info = train_network(name, images, labels, split.train, split.valid, len(classes), params,
                                    config.seed + 1000 * (k + 1), progress=progress, desc=f"teacher {name}@{prep.input_size}")
        for p in model.parameters():
            p.requires_grad_(False)
        teachers.append(Teacher(model, prep))
        if not return_model:
            plain.append([predict_logits(model, images, s, prep, params, device) for s in (split.test, split.valid)])
            tta.append([predict_logits(model, images, s, prep, params, device, True) for s in (split.test, split.valid)])
        facts.append({"teacher": f"{name}@{prep.input_size}", **{k: v for k, v in info.items() if k != "valid_loss_history"}})
    prep = preprocessing_for(model_name, student_params.input_size)
    images = device_images(rows, prep, device)
    student, info = train_network(model_name, images, labels, split.train, split.valid, len(classes), student_params,
                                  config.seed, teachers, progress, desc=f"student {model_name}@{prep.input_size}")
    info = {**info, "teachers": facts}
    to_cpu = lambda m: m.float().cpu().to(memory_format=torch.contiguous_format).eval()  # noqa: E731
    if return_model:
        return to_cpu(student), info
    logits = {t: [predict_logits(student, images, s, prep, student_params, device, t) for s in (split.test, split.valid)]
              for t in (False, True)}
    main = logits[bool(config.tta)]
    out = FoldOutput(main[0], main[1], info, to_cpu(student) if keep_model else None)
    out.extra_outputs = {
        "notta" if config.tta else "tta": tuple(logits[not config.tta]),
        "teacher": tuple(ensemble_logits([t[i] for t in plain]) for i in (0, 1)),
        "teacher-tta": tuple(ensemble_logits([t[i] for t in tta]) for i in (0, 1)),
        **{f"teacher{k + 1}": tuple(t) for k, t in enumerate(plain)},
    }
    return out
