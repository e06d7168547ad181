"""A fully connected twin for 1-D inputs such as the 700 cochlea channels of the Spiking Heidelberg Digits (Cramer
et al. 2020, IEEE TNNLS), where feed-forward spiking MLPs are the dataset's baseline: input (flattened) -> hidden
layers (``spec.hidden``, default 256, 256), each ``Linear`` (+ BNTT when ``spec.bntt``) -> neuron -> dropout ->
readout ``Linear``. Works on any input (images are flattened too); registered as ``mlp``.
"""

from __future__ import annotations

from torch import nn

from spikeforge.models.base import TwinNet
from spikeforge.models.registry import MODELS
from spikeforge.models.spec import ModelSpec, SNNConfig
from spikeforge.models.vgg import init_weights, init_xavier

DEFAULT_HIDDEN = (256, 256)


class MLP(TwinNet):
    """``classifier``: flatten, hidden FCs, readout FC (the ANN's ReLUs are the SNN's neurons)."""

    def __init__(self, spec: ModelSpec, snn: SNNConfig | None = None):
        super().__init__(spec, snn)
        hidden = spec.hidden if spec.hidden is not None else list(DEFAULT_HIDDEN)
        n_in = spec.in_channels * spec.input_size * spec.input_size
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            h = spec.channels(h)
            layers.append(nn.Linear(n_in, h, bias=spec.bias))
            if spec.bntt:
                layers.append(self.bn(h, dims=1))
            layers += [self.act(h), self.drop(spec.dropout)]
            n_in = h
        layers += [nn.Linear(n_in, spec.num_classes, bias=spec.bias), self.readout()]
        self.classifier = nn.Sequential(*layers)
        self.sequence_names = ("classifier",)
        if spec.bntt:
            init_xavier(self)
        else:
            init_mlp(self)


def init_mlp(model: nn.Module) -> None:
    """He-normal init of every ``Linear`` (He, Zhang, Ren & Sun 2015, "Delving deep into rectifiers", ICCV: std
    ``sqrt(2 / fan_in)``), biases 0; the readout as in :func:`~spikeforge.models.vgg.init_weights`."""
    init_weights(model)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for m in linears[:-1]:
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")


MODELS.register("mlp", MLP)
