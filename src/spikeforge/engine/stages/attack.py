"""The ``attack`` stage: adversarial and noise robustness of an earlier stage's model, white-box and black-box
(Sharmin et al., "A comprehensive analysis on adversarial robustness of spiking neural networks", IJCNN 2019;
"Inherent adversarial robustness of deep spiking neural networks: effects of discrete input encoding and non-linear
activations", ECCV 2020); see :mod:`spikeforge.analysis.attacks`.
"""

from __future__ import annotations

import time
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import torch

from spikeforge.analysis.attacks import describe_model, parse_values, plot_robustness, robustness, robustness_table
from spikeforge.analysis.explain.consistency import MapConsistency
from spikeforge.config import Finite, Fraction, NonNegFloat, PosFloat, PosInt, config
from spikeforge.engine.checkpoint import MODEL_FILE, load_checkpoint
from spikeforge.engine.distributed import info as dist_info
from spikeforge.engine.stages.base import STAGES, Context, Stage, StageConfig, check_section, keys_of
from spikeforge.errors import ConfigError
from spikeforge.models import TwinNet


@config
class AttackVariant:
    """Evaluate an SNN as a variant without retraining: ``timesteps``, input ``encoding`` (``poisson_convention``,
    ``poisson_rate``), and ``leak`` (every layer's leak set to this value)."""

    timesteps: PosInt | None = None
    encoding: str | None = None
    poisson_convention: Literal["rate", "half"] | None = None
    poisson_rate: PosFloat | None = None
    leak: Fraction | None = None


VariantKeys = keys_of(AttackVariant)

#: A value of ``eps`` or ``noise``: a number or a fraction string such as ``"8/255"``.
Amount = Finite | str


@config
class AttackStageConfig(StageConfig):
    """Robustness of the previous (or ``source``) stage's model.

    ``attack``: fgsm, pgd or eotpgd; ``eps``: perturbation sizes in (0, 1] (numbers or "8/255" strings);
    ``steps``/``alpha``/``eot_iter``: PGD iterations, step size (None: the attack's default) and EOT samples;
    ``black_box``: name of an earlier stage whose model crafts transfer attacks; ``noise``: Gaussian sigmas in
    (0, 10]; ``grad_estimator``: SNN input gradients by ``bptt``, ``sharmin`` (first-layer estimator) or ``auto``;
    ``surrogate``: surrogate used for the attack gradients; ``snn``: evaluate a variant of an SNN without retraining
    (:class:`AttackVariant`); ``batches``: test batches used (None: the whole test set).

    ``checkpoint``: attack the model of another run instead of an earlier stage's (a ``model.pt`` file or a stage
    directory; a relative path is taken from this run's directory, e.g. ``../other-run/bntt``).
    ``sam_consistency``: also score how much the target's explanation map moves under each perturbation (SAM,
    Kim & Panda, Sci. Rep. 2021, for an SNN; Grad-CAM for an ANN): per-image Pearson correlation and top-k overlap
    (``sam_topk``: the share of pixels counted as top) of the clean and perturbed maps at ``sam_layer`` (None: the
    middle spatial layer), with SAM's ``sam_gamma``; see :mod:`spikeforge.analysis.explain.consistency`.
    """

    kind: Literal["attack"]
    attack: Literal["fgsm", "pgd", "eotpgd"] = "pgd"
    eps: list[Amount] = field(default_factory=lambda: ["2/255", "4/255", "8/255"])
    steps: PosInt = 7
    alpha: PosFloat | None = None
    eot_iter: PosInt = 4
    noise: list[Amount] = field(default_factory=list)
    black_box: str | None = None
    grad_estimator: Literal["auto", "bptt", "sharmin"] = "auto"
    surrogate: Any = None
    snn: VariantKeys = field(default_factory=dict)
    batches: PosInt | None = None
    checkpoint: str | None = None
    sam_consistency: bool = False
    sam_layer: str | None = None
    sam_topk: Fraction = 0.1
    sam_gamma: NonNegFloat = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        where = self.where
        self.eps = parse_values(",".join(str(e) for e in self.eps), f"{where}.eps") if self.eps else []
        self.noise = parse_values(",".join(str(e) for e in self.noise), f"{where}.noise", high=10.0) \
            if self.noise else []
        check_section(AttackVariant, self.snn, f"{where}.snn")
        if self.sam_topk <= 0:
            raise ConfigError(f"{where}.sam_topk must be in (0, 1] (the share of pixels counted as top), "
                              f"got {self.sam_topk}")


@STAGES.register("attack")
class AttackStage(Stage):
    """White-box (and black-box, noise) robustness of the input model; writes a table, JSON and a plot."""

    Config = AttackStageConfig

    @classmethod
    def inputs(cls, cfg) -> list[str]:
        bb = getattr(cfg, "black_box", None)
        return [bb] if bb else []

    def run(self, ctx: Context) -> dict:
        cfg, t0 = self.cfg, time.time()
        model, _ = self._target(ctx)
        if cfg.snn:
            self._variant(model)
        source = None
        if cfg.black_box:
            source, _ = load_checkpoint(ctx.out_dir / cfg.black_box / MODEL_FILE)
            source.to(ctx.device)
        model.to(ctx.device)
        res = robustness(model, ctx.data.test, attack=cfg.attack, eps=cfg.eps, source=source, noise=cfg.noise,
                         max_batches=cfg.batches, alpha=cfg.alpha, steps=cfg.steps, eot_iter=cfg.eot_iter,
                         surrogate=cfg.surrogate, grad_estimator=cfg.grad_estimator, seed=ctx.recipe.seed,
                         device=ctx.device, progress=ctx.progress, compare=self._compare())
        if dist_info().is_main:
            (ctx.stage_dir / "robustness.txt").write_text(robustness_table(res) + "\n")
            plot_robustness(res, ctx.stage_dir / "robustness.png")
        ctx.log(robustness_table(res))
        return self.finish(ctx, model, {"kind": "attack", "test_acc": res["models"]["target"]["clean"],
                                        "model": describe_model(model), "epochs": 0, "seconds": time.time() - t0,
                                        "robustness": res})

    def _target(self, ctx: Context) -> tuple[TwinNet, dict]:
        """The model to attack: ``checkpoint`` (another run's) if given, else the previous (or ``source``) stage's."""
        if self.cfg.checkpoint is None:
            return self.load_previous(ctx)
        path = Path(self.cfg.checkpoint).expanduser()
        path = path if path.is_absolute() else ctx.out_dir / path
        if path.is_dir():
            path = path / MODEL_FILE
        if not path.is_file():
            raise ConfigError(f"{self.cfg.where}.checkpoint: {path} does not exist; train that model first or fix "
                              "the path (relative paths start at this run's directory)")
        return load_checkpoint(path)

    def _compare(self) -> MapConsistency | None:
        cfg = self.cfg
        return MapConsistency(cfg.sam_layer, cfg.sam_topk, cfg.sam_gamma) if cfg.sam_consistency else None

    def _variant(self, model: TwinNet) -> None:
        """Apply the stage's ``snn`` variant (encoding, timesteps, leak) to the loaded SNN."""
        if not model.spiking:
            raise ConfigError(f"{self.cfg.where}.snn applies to SNNs, but the input model is an ANN")
        over = dict(self.cfg.snn)
        leak = over.pop("leak", None)
        if "encoding" in over or "poisson_convention" in over or "poisson_rate" in over:
            model.set_encoding(over.pop("encoding", model.snn.encoding),
                               **{k: over.pop(k) for k in ("poisson_convention", "poisson_rate") if k in over})
        if "timesteps" in over:
            model.timesteps = over.pop("timesteps")
        if leak is not None:
            with torch.no_grad():
                for n in model.neurons():
                    n.leak.fill_(float(leak))
