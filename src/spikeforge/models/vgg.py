"""VGG twins (Simonyan & Zisserman 2015, as adapted for SNNs by Sengupta et al. 2019 and Rathi et al. 2020):
3x3 convs, 2x2 average pooling, bias-free by default.

``cfg`` lists conv output channels, ``"A"`` for AvgPool(2) and ``"G"`` for a global average pool (BNTT VGG11).
The ``*_bntt`` architectures are those of Kim & Panda 2021 (BNTT): BNTT after every conv and the hidden FC, Xavier
init. ImageNet-size inputs (>= 128 px) get one extra final pool (Rathi & Roy 2020, DIET-SNN ImageNet VGG16: 512x7x7
into the classifier). The classifier input size is derived from the input size. Every ``CFGS`` name registers as
an architecture.
"""

from __future__ import annotations

from torch import nn

from spikeforge.errors import ConfigError
from spikeforge.models.base import TwinNet
from spikeforge.models.registry import MODELS
from spikeforge.models.spec import ModelSpec, SNNConfig

CFGS: dict[str, tuple[list, list[int]]] = {
    "vgg4": ([64, "A", 128, "A"], [1024]),
    "vgg5": ([64, "A", 128, 128, "A"], [4096, 4096]),
    "vgg9": ([64, "A", 128, 256, "A", 256, 512, "A", 512, "A", 512], [4096, 4096]),
    "vgg11": ([64, "A", 128, 256, "A", 512, 512, "A", 512, "A", 512, 512], [4096, 4096]),
    "vgg16": ([64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512], [4096, 4096]),
    "vgg9_bntt": ([64, 64, "A", 128, 128, "A", 256, 256, 256, "A"], [1024]),
    "vgg11_bntt": ([64, "A", 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "G"], [4096]),
}


class VGG(TwinNet):
    """``features`` (convs, pools) -> ``classifier`` (flatten, hidden FCs, readout FC), run one after the other.

    ``cfg`` overrides the architecture's conv list (then ``spec.arch`` need not be in ``CFGS``; the default hidden
    sizes are then none)."""

    def __init__(self, spec: ModelSpec, snn: SNNConfig | None = None, cfg: list | None = None):
        super().__init__(spec, snn)
        default_cfg, default_hidden = CFGS[spec.arch] if cfg is None or spec.arch in CFGS else (cfg, [])
        cfg = list(cfg or default_cfg)
        if spec.input_size >= 128:
            cfg.append("A")
        hidden = spec.hidden if spec.hidden is not None else default_hidden
        layers: list[nn.Module] = []
        c_in, size = spec.in_channels, spec.input_size
        for i, item in enumerate(cfg):
            if item == "A":
                layers.append(nn.AvgPool2d(2))
                size //= 2
                continue
            if item == "G":
                layers.append(nn.AdaptiveAvgPool2d(1))
                size = 1
                continue
            c_out = spec.channels(item)
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=spec.conv_bias))
            if spec.batch_norm or spec.bntt:
                layers.append(self.bn(c_out))
            layers.append(self.act(c_out))
            next_is_pool = i + 1 < len(cfg) and cfg[i + 1] == "A"
            if spec.conv_dropout > 0 and not next_is_pool:
                layers.append(self.drop(spec.conv_dropout))
            c_in = c_out
        if size < 1:
            raise ConfigError(f"input_size {spec.input_size} is too small for {spec.arch} ({cfg.count('A')} pools)")
        self.features = nn.Sequential(*layers)
        cls: list[nn.Module] = [nn.Flatten()]
        n_in = c_in * size * size
        for h in hidden:
            h = spec.channels(h)
            cls += [nn.Linear(n_in, h, bias=spec.bias)]
            if spec.bntt:
                cls.append(self.bn(h, dims=1))
            cls += [self.act(h), self.drop(spec.dropout)]
            n_in = h
        cls += [nn.Linear(n_in, spec.num_classes, bias=spec.bias), self.readout()]
        self.classifier = nn.Sequential(*cls)
        self.sequence_names = ("features", "classifier")
        if spec.bntt:
            init_xavier(self)
        else:
            init_weights(self)


def init_xavier(model: nn.Module, gain: float = 2.0) -> None:
    """BNTT init (Kim & Panda 2021): Xavier-uniform weights (Glorot & Bengio 2010) with gain 2, biases 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_weights(model: nn.Module) -> None:
    """Init of Rathi et al. 2020: conv N(0, sqrt(2 / (k*k*C_out))) (He et al. 2015), linear N(0, 0.01), biases 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, (2.0 / n) ** 0.5)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)


for _name in CFGS:
    MODELS.register(_name, VGG)
