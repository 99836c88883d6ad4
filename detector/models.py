"""Meso-4 and MesoInception-4 (Afchar et al., 2018, "MesoNet: a Compact Facial Video Forgery
Detection Network"), written in PyTorch from the layer list of the original Keras definitions.

Both networks read a 256x256 RGB face crop in [0, 1] and return one logit; sigmoid(logit) is
P(fake) (label 1 = fake in this project; the Keras release used the reverse).

Layer order follows the Keras code: conv (same padding, bias, ReLU) -> BatchNorm -> max-pool.
An inception layer concatenates four branches (1x1 | 1x1->3x3 | 1x1->3x3 dil 2 | 1x1->3x3 dil 3),
each conv followed by ReLU, and one BatchNorm follows the concatenation. With Keras' trainable
parameters (BatchNorm gamma and beta only) this gives exactly 27,977 (Meso-4) and 28,615
(MesoInception-4) parameters.
"""

from __future__ import annotations

from typing import Sequence, Type

import torch
from torch import nn

__all__ = [
    "MesoNet", "ConvBlock", "InceptionBlock", "MODEL_NAMES", "create_model", "meso4",
    "mesoinception4", "count_parameters", "INPUT_SIZE",
]

INPUT_SIZE = 256

# Keras BatchNormalization defaults (momentum 0.99 there == 0.01 in PyTorch's convention).
KERAS_BN_EPS = 1e-3
KERAS_BN_MOMENTUM = 0.01


def _same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the spatial size for an odd kernel at stride 1 (Keras `padding='same'`)."""
    return dilation * (kernel_size - 1) // 2


class ConvReLU(nn.Sequential):
    """Conv (same padding, with bias) followed by ReLU: the Keras `Conv2D(..., activation='relu')`."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, dilation: int = 1,
                 act_layer: Type[nn.Module] = nn.ReLU) -> None:
        super().__init__(
            nn.Conv2d(in_chs, out_chs, kernel_size, padding=_same_padding(kernel_size, dilation),
                      dilation=dilation, bias=True),
            act_layer(inplace=True),
        )


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels: a 1x1; b 1x1->3x3; c 1x1->3x3 dilation 2;
    d 1x1->3x3 dilation 3. Output channels = a + b + c + d."""

    def __init__(self, in_chs: int, a: int = 1, b: int = 4, c: int = 4, d: int = 2,
                 act_layer: Type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.branch_a = ConvReLU(in_chs, a, 1, act_layer=act_layer)
        self.branch_b = nn.Sequential(ConvReLU(in_chs, b, 1, act_layer=act_layer),
                                      ConvReLU(b, b, 3, act_layer=act_layer))
        self.branch_c = nn.Sequential(ConvReLU(in_chs, c, 1, act_layer=act_layer),
                                      ConvReLU(c, c, 3, dilation=2, act_layer=act_layer))
        self.branch_d = nn.Sequential(ConvReLU(in_chs, d, 1, act_layer=act_layer),
                                      ConvReLU(d, d, 3, dilation=3, act_layer=act_layer))
        self.out_chs = a + b + c + d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch_a(x), self.branch_b(x), self.branch_c(x), self.branch_d(x)], 1)


class ConvBlock(nn.Module):
    """One stage of the trunk: a conv or inception layer, then BatchNorm, then max-pool."""

    def __init__(self, layer: nn.Module, out_chs: int, pool: int = 2,
                 norm_layer: Type[nn.Module] = nn.BatchNorm2d,
                 bn_eps: float = KERAS_BN_EPS, bn_momentum: float = KERAS_BN_MOMENTUM) -> None:
        super().__init__()
        self.layer = layer
        self.bn = norm_layer(out_chs, eps=bn_eps, momentum=bn_momentum)
        self.pool = nn.MaxPool2d(pool, pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn(self.layer(x)))


# A trunk stage is ("conv", out_chs, kernel, pool) or ("inception", (a, b, c, d), pool).
StageCfg = tuple


class MesoNet(nn.Module):
    """The MesoNet family: a four-stage trunk to a 16x8x8 map, then the dense head
    dropout -> dense(16) -> LeakyReLU(0.1) -> dropout -> dense(1).

    `forward_features` returns the 16x8x8 map, `flat_features` its 1024-d flattening,
    `forward_head(x, pre_logits=True)` the 16-d hidden vector after LeakyReLU (the SVM's input).
    """

    def __init__(self, stages: Sequence[StageCfg], in_chans: int = 3, hidden: int = 16,
                 drop_rate: float = 0.5, leaky_slope: float = 0.1,
                 bn_eps: float = KERAS_BN_EPS, bn_momentum: float = KERAS_BN_MOMENTUM,
                 act_layer: Type[nn.Module] = nn.ReLU, norm_layer: Type[nn.Module] = nn.BatchNorm2d,
                 img_size: int = INPUT_SIZE) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        chs, size = in_chans, img_size
        for kind, width, *rest in stages:
            if kind == "conv":
                kernel, pool = rest
                layer: nn.Module = ConvReLU(chs, width, kernel, act_layer=act_layer)
                out = width
            elif kind == "inception":
                (pool,) = rest
                layer = InceptionBlock(chs, *width, act_layer=act_layer)
                out = layer.out_chs
            else:
                raise ValueError(f"unknown stage kind {kind!r}; expected 'conv' or 'inception'")
            blocks.append(ConvBlock(layer, out, pool, norm_layer, bn_eps, bn_momentum))
            chs, size = out, size // pool
        self.features = nn.Sequential(*blocks)
        self.num_features = chs * size * size  # 16 * 8 * 8 = 1024 at 256x256
        self.hidden_dim = hidden
        self.drop1 = nn.Dropout(drop_rate)
        self.fc1 = nn.Linear(self.num_features, hidden)
        self.act = nn.LeakyReLU(leaky_slope)
        self.drop2 = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # Keras defaults: Glorot-uniform kernels, zero biases (PyTorch's default differs).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch (B, 3, 256, 256) in [0, 1] -> feature map (B, 16, 8, 8)."""
        return self.features(x)

    def flat_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> the 1024-d flattened trunk output."""
        return torch.flatten(self.forward_features(x), 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logit (B,), or the 16-d hidden vector after LeakyReLU if `pre_logits`."""
        x = self.act(self.fc1(self.drop1(torch.flatten(x, 1))))
        if pre_logits:
            return x
        return self.fc2(self.drop2(x)).squeeze(1)

    def hidden_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> the 16-d hidden vector after LeakyReLU."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> one logit per image; sigmoid(logit) = P(fake)."""
        return self.forward_head(self.forward_features(x))


_CFGS: dict[str, dict] = {
    "meso4": dict(stages=(("conv", 8, 3, 2), ("conv", 8, 5, 2), ("conv", 16, 5, 2), ("conv", 16, 5, 4))),
    "mesoinception4": dict(stages=(("inception", (1, 4, 4, 2), 2), ("inception", (2, 4, 4, 2), 2),
                                   ("conv", 16, 5, 2), ("conv", 16, 5, 4))),
}
MODEL_NAMES = tuple(_CFGS)


def _create_mesonet(variant: str, **kwargs) -> MesoNet:
    if variant not in _CFGS:
        raise ValueError(f"unknown model {variant!r}; expected one of {', '.join(MODEL_NAMES)}")
    return MesoNet(**{**_CFGS[variant], **kwargs})


def meso4(**kwargs) -> MesoNet:
    """Meso-4: four conv stages (8 3x3, 8 5x5, 16 5x5, 16 5x5), 27,977 parameters."""
    return _create_mesonet("meso4", **kwargs)


def mesoinception4(**kwargs) -> MesoNet:
    """MesoInception-4: inception (1,4,4,2) and (2,4,4,2), then two 16 5x5 convs; 28,615 parameters."""
    return _create_mesonet("mesoinception4", **kwargs)


def create_model(name: str, **kwargs) -> MesoNet:
    """A fresh network by name: 'meso4' or 'mesoinception4'."""
    return _create_mesonet(name, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; BatchNorm running statistics are buffers, not counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
