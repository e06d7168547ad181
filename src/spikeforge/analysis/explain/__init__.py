"""Visual explanations for spiking networks and their ANN twins: SAM (Kim & Panda, Sci. Rep. 2021)
and Grad-CAM (Selvaraju et al., ICCV 2017).

``SAM(snn, target_layers=[...])(images)`` and ``GradCAM(model, target_layers=[...])(images, targets)`` return maps
per timestep ``[T, B, H, W]`` with their reduction over time in ``.summed``; ``spikeforge explain`` draws them
(:mod:`spikeforge.app.commands.explain`). See :mod:`spikeforge.analysis.explain.maps` for the definitions.
"""

from spikeforge.analysis.explain.maps import (
    SAM,
    GradCAM,
    default_layer,
    fgsm,
    layer_names,
    minmax,
    neuronal_contribution,
    pearson,
    resolve_layer,
    sam_maps,
)

__all__ = [
    "SAM",
    "GradCAM",
    "default_layer",
    "fgsm",
    "layer_names",
    "minmax",
    "neuronal_contribution",
    "pearson",
    "resolve_layer",
    "sam_maps",
]
