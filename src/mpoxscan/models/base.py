"""What every backbone in the zoo offers, whatever its family."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Backbone(nn.Module):
    """An ImageNet-style CNN split into feature extractor, global pooling and a replaceable linear classifier.

    Subclasses build their layers under the parameter names of the published weights (so that they load with
    ``strict=True``) and implement :meth:`forward_features`, :attr:`cam_layer` and the classifier accessors.
    """

    #: Channels of the last feature map (= length of the pooled feature vector).
    num_features: int
    #: Dropout applied to the pooled features before the classifier, during training only.
    drop_rate: float

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) -> last convolutional feature map (N, C, h, w), after its activation."""
        return self.forward_from(self.forward_until(x, self.num_blocks), self.num_blocks)

    # The network as stem, ``num_blocks`` blocks and a head: fine-tuning freezes the stem and the first blocks,
    # caches their output once, and trains the rest.
    num_blocks: int

    def forward_until(self, x: torch.Tensor, block: int) -> torch.Tensor:
        """Images -> the activation entering block ``block`` (0: right after the stem)."""
        raise NotImplementedError

    def forward_from(self, h: torch.Tensor, block: int) -> torch.Tensor:
        """The activation entering block ``block`` -> the last feature map."""
        raise NotImplementedError

    def modules_from(self, block: int) -> list[nn.Module]:
        """The modules that :meth:`forward_from` runs (without the classifier): what fine-tuning trains."""
        raise NotImplementedError

    @property
    def cam_layer(self) -> nn.Module:
        """The module whose output is :meth:`forward_features`' map: the layer for Grad-CAM and CAM."""
        raise NotImplementedError

    def get_classifier(self) -> nn.Linear:
        raise NotImplementedError

    def _set_classifier(self, layer: nn.Linear) -> None:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> nn.Linear:
        """Replace the classifier with a freshly initialised one for ``num_classes`` classes and return it."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        layer = nn.Linear(self.num_features, num_classes)
        nn.init.normal_(layer.weight, std=0.01)
        nn.init.zeros_(layer.bias)
        self._set_classifier(layer)
        return layer

    @property
    def num_classes(self) -> int:
        return self.get_classifier().out_features

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Feature map (N, C, h, w) -> pooled features (N, C)."""
        return F.adaptive_avg_pool2d(features, 1).flatten(1)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> pooled features (N, num_features): the input of the classifier."""
        return self.pool(self.forward_features(x))

    def forward_head(self, pooled: torch.Tensor) -> torch.Tensor:
        pooled = F.dropout(pooled, p=self.drop_rate, training=self.training)
        return self.get_classifier()(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_pooled(x))
