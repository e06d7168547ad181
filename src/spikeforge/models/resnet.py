"""ResNet twins as in Rathi et al. 2020 (hybrid conversion + STDB) and Rathi & Roy 2020 (DIET-SNN).

Stem: three 3x3 convs with 64 channels (spiking, dropout between) and AvgPool(2). Then four stages of BasicBlocks
with 64/128/256/512 planes and first-block strides 1/2/2/2; block counts resnet20 [2,2,2,2], resnet34 [3,4,6,3]
(resnet12 [1,1,1,1] for tests). Shortcut: identity or a strided 1x1 conv; its current is added into the membrane
of the block's second neuron. The final 512 x 2 x 2 map (adaptive average pool to 2x2 for larger inputs) is
flattened into one FC layer.
"""

from __future__ import annotations

import torch
from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.models.base import TwinNet
from spikeforge.models.registry import MODELS
from spikeforge.models.spec import ModelSpec, SNNConfig
from spikeforge.models.vgg import init_weights
from spikeforge.nn.layers import apply_time_first, fold

BLOCKS = {"resnet12": [1, 1, 1, 1], "resnet20": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}


class BasicBlock(nn.Module):
    """``act2(conv2(drop(act1(conv1(x)))) + shortcut(x))``; time-aware in the SNN twin (``forward(x, steps)``)."""

    time_aware = True

    def __init__(self, net: TwinNet, c_in: int, planes: int, stride: int, dropout: float):
        super().__init__()
        spec = net.spec
        self.spiking = net.spiking
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride=stride, padding=1, bias=spec.conv_bias)
        self.bn1 = net.bn(planes) or nn.Identity()
        self.act1 = net.act(planes)
        self.drop = net.drop(dropout)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=spec.conv_bias)
        self.bn2 = net.bn(planes) or nn.Identity()
        sc: list[nn.Module] = []
        if stride != 1 or c_in != planes:
            sc.append(nn.Conv2d(c_in, planes, 1, stride=stride, bias=spec.conv_bias))
            if spec.batch_norm:
                sc.append(net.bn(planes))
        self.shortcut = nn.Sequential(*sc)
        self.act2 = net.act(planes)

    def forward(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        if not self.spiking:
            out = self.drop(self.act1(self.bn1(self.conv1(x))))
            return self.act2(self.bn2(self.conv2(out)) + self.shortcut(x))
        out = apply_time_first(self.act1, fold(nn.Sequential(self.conv1, self.bn1), x), steps)
        out = apply_time_first(self.drop, out, steps)
        current = fold(nn.Sequential(self.conv2, self.bn2), out)
        if len(self.shortcut):
            short = fold(self.shortcut, x)
        else:
            short = x
        if short.shape[0] != current.shape[0]:  # direct input reaching a block: broadcast over time
            short = short.expand_as(current)
        return apply_time_first(self.act2, current + short, steps)


class ResNet(TwinNet):
    """``stem`` -> ``layers`` (BasicBlocks) -> ``classifier``."""

    def __init__(self, spec: ModelSpec, snn: SNNConfig | None = None):
        super().__init__(spec, snn)
        if spec.bntt:
            raise ConfigError(f"model.bntt is implemented for the VGG architectures, not {spec.arch}")
        blocks = BLOCKS[spec.arch]
        c = spec.channels(64)
        stem: list[nn.Module] = []
        c_in = spec.in_channels
        for i in range(3):
            stem.append(nn.Conv2d(c_in, c, 3, padding=1, bias=spec.conv_bias))
            if spec.batch_norm:
                stem.append(self.bn(c))
            stem.append(self.act(c))
            if i < 2:
                stem.append(self.drop(spec.conv_dropout))
            c_in = c
        stem.append(nn.AvgPool2d(2))
        self.stem = nn.Sequential(*stem)
        size = spec.input_size // 2
        layers: list[nn.Module] = []
        for planes, count, stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2)):
            planes = spec.channels(planes)
            for b in range(count):
                s = stride if b == 0 else 1
                layers.append(BasicBlock(self, c_in, planes, s, spec.conv_dropout))
                if s == 2:
                    size = (size + 1) // 2
                c_in = planes
        self.layers = nn.Sequential(*layers)
        cls: list[nn.Module] = []
        if size != 2:
            cls.append(nn.AdaptiveAvgPool2d(2))
        cls += [nn.Flatten(), nn.Linear(c_in * 4, spec.num_classes, bias=spec.bias), self.readout()]
        self.classifier = nn.Sequential(*cls)
        self.sequence_names = ("stem", "layers", "classifier")
        init_weights(self)


for _name in BLOCKS:
    MODELS.register(_name, ResNet)
