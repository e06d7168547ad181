"""Adversarial attacks and noise robustness for spikeforge ANNs and SNNs.

Attacks are callables shaped like torchattacks' (``atk = PGD(model, eps=8/255, alpha=2/255, steps=7);
adv = atk(images, labels)``) on images in ``[0, 1]`` (:mod:`~spikeforge.analysis.attacks.base`): :class:`FGSM`
(Goodfellow et al. 2015), :class:`PGD` (Madry et al. 2018), :class:`EOTPGD` (Athalye et al. 2018) and the
:class:`GaussianNoise` baseline. SNN input gradients come from BPTT through the surrogate or from the first-layer
estimator of Sharmin et al. (ECCV 2020) (:mod:`~spikeforge.analysis.attacks.gradients`). :func:`robustness` runs the
white-box / black-box / noise study of Sharmin et al. (IJCNN 2019, ECCV 2020)
(:mod:`~spikeforge.analysis.attacks.study`); ``spikeforge attack`` (:mod:`spikeforge.app.commands.attack`) prints its table and writes JSON and a plot.
"""

from spikeforge.analysis.attacks.base import ATTACKS, TARGET_MODES, Attack
from spikeforge.analysis.attacks.fgsm import FGSM
from spikeforge.analysis.attacks.gradients import GRAD_ESTIMATORS, attack_surrogate, input_gradient
from spikeforge.analysis.attacks.noise import GaussianNoise
from spikeforge.analysis.attacks.pgd import EOTPGD, PGD
from spikeforge.analysis.attacks.study import (accuracy, describe_model, make_attack, parse_values, plot_robustness,
                                               robustness, robustness_table)

__all__ = [
    "ATTACKS",
    "GRAD_ESTIMATORS",
    "TARGET_MODES",
    "Attack",
    "EOTPGD",
    "FGSM",
    "GaussianNoise",
    "PGD",
    "accuracy",
    "attack_surrogate",
    "describe_model",
    "input_gradient",
    "make_attack",
    "parse_values",
    "plot_robustness",
    "robustness",
    "robustness_table",
]
