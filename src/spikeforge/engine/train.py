"""The one training loop, for ANNs and SNNs alike (BPTT through all ``T`` steps happens inside the model).

Which parameter groups learn (``weights``, ``threshold``, ``leak``: the trainable thresholds and leaks of DIET-SNN,
Rathi & Roy 2020), their learning rates, the optimizer and the schedule are configuration (:class:`OptimConfig`).
Every epoch ends with an atomic checkpoint holding the optimizer and scheduler state; :func:`fit` resumes from it.
Each epoch reseeds every random source from (seed, epoch), so a resumed run reproduces the uninterrupted one exactly
on the CPU.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from tqdm.auto import tqdm

from spikeforge.analysis.monitor import DeadLayerWatch, SpikeMonitor
from spikeforge.config import Fraction, NonNegFloat, PosFloat, config
from spikeforge.engine.averaging import WeightAverage
from spikeforge.engine.checkpoint import RESUME_FILE, load_raw, save_checkpoint
from spikeforge.engine.distributed import all_reduce_sum, barrier, wrap
from spikeforge.engine.distributed import info as dist_info
from spikeforge.errors import CheckpointError, ConfigError
from spikeforge.models import TwinNet, param_groups
from spikeforge.utils import bars_disabled

Group = Literal["weights", "threshold", "leak"]
#: The parameter groups that learn: a non-empty list of ``weights``, ``threshold``, ``leak``.
TrainGroups = Annotated[list[Group], Field(min_length=1)]
#: A point of the step schedule, as a fraction of all training steps.
Milestone = Annotated[float, Field(gt=0, le=1)]
#: Label smoothing epsilon (Szegedy et al. 2016): 0 is none, 1 would erase the labels.
Smoothing = Annotated[float, Field(ge=0, lt=1)]
#: Decay of the weight average (:mod:`spikeforge.engine.averaging`): 0 and 1 would be no average at all.
Decay = Annotated[float, Field(gt=0, lt=1)]


@config
class OptimConfig:
    """Optimizer and schedule of one training stage (the keys of every training stage of a recipe).

    ``optimizer``: ``sgd`` or ``adam``; ``lr`` for the weights, ``threshold_lr``/``leak_lr`` for those groups (None:
    same as ``lr``); ``weight_decay`` applies to weights only. ``schedule``: ``none``, ``step`` (multiply by
    ``gamma`` at ``milestones``, fractions of the epochs in (0, 1]) or ``cosine``. ``train``: the groups that learn.
    ``grad_clip``: clip the gradient norm to this value (None: no clipping). ``ema``: keep an exponential moving
    average of the weights with this decay (e.g. 0.999) and evaluate and keep the average
    (:class:`~spikeforge.engine.averaging.WeightAverage`; None: the last iterate).
    """

    optimizer: Literal["sgd", "adam"] = "adam"
    lr: PosFloat = 1e-3
    threshold_lr: PosFloat | None = None
    leak_lr: PosFloat | None = None
    momentum: Fraction = 0.9
    nesterov: bool = False
    amsgrad: bool = False
    weight_decay: NonNegFloat = 0.0
    schedule: Literal["none", "step", "cosine"] = "cosine"
    milestones: list[Milestone] = field(default_factory=lambda: [0.6, 0.8, 0.9])
    gamma: PosFloat = 0.1
    label_smoothing: Smoothing = 0.0
    grad_clip: PosFloat | None = None
    ema: Decay | None = None
    train: TrainGroups = field(default_factory=lambda: ["weights"])


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer over :func:`spikeforge.models.param_groups` (``*.threshold``, ``*.leak``, the rest are weights;
    groups not in ``cfg.train`` are frozen). The groups also keep thresholds positive and leaks in [0, 1] after every
    step (:func:`spikeforge.models.auto_constrain`)."""
    groups = param_groups(model, cfg.lr, threshold_lr=cfg.threshold_lr, leak_lr=cfg.leak_lr,
                          weight_decay=cfg.weight_decay, train=cfg.train)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.Adam(groups, lr=cfg.lr, amsgrad=cfg.amsgrad)


def build_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, epochs: int, steps_per_epoch: int):
    """Stepped once per batch, so short runs (one or two epochs) still anneal."""
    total = max(1, epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total)))
    if cfg.schedule == "step":
        marks = sorted(int(m * total) for m in cfg.milestones)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: cfg.gamma ** sum(i >= m for m in marks))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)


def seed_everything(*parts: int) -> None:
    """Seed torch's global RNG from a tuple of ints (e.g. run seed, stage index, epoch)."""
    s = 0
    for p in parts:
        s = (s * 1_000_003 + int(p)) % (2**63 - 1)
    torch.manual_seed(s)


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device, *, max_batches: int | None = None, progress: bool = False,
             desc: str = "eval") -> dict:
    """Accuracy (fraction), mean loss, and for SNNs the spike rate per layer and its mean."""
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    mon = SpikeMonitor(model)
    n_batches = len(loader) if max_batches is None else min(len(loader), max_batches)
    dinfo = dist_info()
    with mon, DeadLayerWatch(model, window=max(n_batches, 1)):  # names a layer that never spiked on the test set
        bar = tqdm(loader, total=n_batches, desc=desc, disable=bars_disabled(progress), leave=False)
        for i, (x, y) in enumerate(bar):
            if i >= n_batches:
                break
            if i % dinfo.world_size != dinfo.rank:  # distributed: each rank takes every world_size-th batch
                continue
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x)
            loss_sum += float(F.cross_entropy(out.float(), y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            total += int(y.numel())
    if dinfo.enabled:
        correct, total, loss_sum = all_reduce_sum([correct, total, loss_sum], device)
        correct, total = int(correct), int(total)
    res = {"acc": correct / max(total, 1), "loss": loss_sum / max(total, 1), "samples": total}
    if mon.layers:
        res["spike_rate"] = {**mon.rates(), "mean": mon.mean_rate()}
    return res


def accuracy_over_time(model: TwinNet, loader, device, steps: list[int], max_batches: int | None = None,
                       progress: bool = False) -> dict[int, float]:
    """Test accuracy at every ``T`` in ``steps`` from one simulation of ``max(steps)`` timesteps."""
    model.eval().to(device)
    steps = sorted(set(int(s) for s in steps))
    correct = {t: 0 for t in steps}
    total = 0
    n = len(loader) if max_batches is None else min(len(loader), max_batches)
    with torch.no_grad():
        for i, (x, y) in enumerate(tqdm(loader, total=n, desc=f"accuracy vs T (up to {steps[-1]})",
                                        disable=bars_disabled(progress), leave=False)):
            if i >= n:
                break
            x, y = x.to(device), y.to(device)
            outs = model.forward_cumulative(x, steps)
            for t, out in zip(steps, outs):
                correct[t] += int((out.argmax(1) == y).sum())
            total += int(y.numel())
    return {t: correct[t] / max(total, 1) for t in steps}


#: ``criterion(logits, images, labels) -> loss``: what :func:`fit` minimises (default: cross-entropy).
Criterion = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(label_smoothing: float = 0.0) -> Criterion:
    """Cross-entropy with label smoothing (Szegedy et al. 2016), the default criterion."""
    def loss(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.float(), y, label_smoothing=label_smoothing)
    return loss


def distillation(teacher: nn.Module, *, weight: float, temperature: float, label_smoothing: float = 0.0) -> Criterion:
    """Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the knowledge in a neural network", 2015):

    ``L = (1 - w) CE(z_s, y) + w tau^2 KL(softmax(z_t / tau) || softmax(z_s / tau))``

    with student logits ``z_s``, teacher logits ``z_t`` (the teacher runs in eval mode without gradients on the same
    batch), weight ``w`` and temperature ``tau``; the ``tau^2`` keeps the soft term's gradient scale independent of
    ``tau``. Applied to SNN students with ANN teachers by Kushawaha et al., "Distilling spikes: knowledge distillation
    in spiking neural networks" (ICPR 2020, arXiv:2005.00288); here the teacher may also be the higher-T SNN of the
    previous stage of a timestep reduction.
    """
    ce = cross_entropy(label_smoothing)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = F.log_softmax(teacher(x).float() / temperature, dim=1)
        soft = F.kl_div(F.log_softmax(out.float() / temperature, dim=1), target, log_target=True,
                        reduction="batchmean")
        return (1.0 - weight) * ce(out, x, y) + weight * temperature ** 2 * soft
    return loss


@dataclass
class FitResult:
    history: list[dict]
    seconds: float
    resumed_from_epoch: int
    final_eval: dict


@dataclass
class _Epoch:
    """Running sums of one training epoch."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0


def fit(model: TwinNet, data, cfg: OptimConfig, *, epochs: int, stage_dir: Path, device: torch.device, seed: int = 0,
        stage_index: int = 0, header: dict | None = None, max_batches: int | None = None,
        eval_batches: int | None = None, eval_every: int = 1, amp: bool = False, progress: bool = True,
        desc: str = "train", on_epoch_end: Callable[[int, dict, dict], None] | None = None,
        criterion: Criterion | None = None) -> FitResult:
    """Train ``model`` for ``epochs`` epochs on ``data.train``, evaluating on ``data.test`` after every
    ``eval_every``-th epoch (0: none) and always after the last one (skipped epochs record ``test_acc: None``).

    Resumes from ``stage_dir/last.pt`` when it exists (the epoch count, optimizer and scheduler come back).
    ``on_epoch_end(epoch, record, layer_rates)`` is called after each epoch with its history record and the training
    spike rate of each layer (experiment logging). ``criterion``: the loss (default: cross-entropy with the config's
    label smoothing; :func:`distillation` for knowledge distillation). With ``cfg.ema`` the tests and the model left
    behind are the weight average; ``last.pt`` keeps the last iterate and the average.
    """
    model.to(device)
    criterion = criterion or cross_entropy(cfg.label_smoothing)
    steps = len(data.train) if max_batches is None else min(len(data.train), max_batches)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, epochs, steps)
    avg = WeightAverage(model, cfg.ema) if cfg.ema else None
    resume = Path(stage_dir) / RESUME_FILE
    start, history, seconds = _resume(resume, model, opt, sched, device, avg)
    net = wrap(model, device)  # DistributedDataParallel under torchrun, else the model
    ev = None
    watch = DeadLayerWatch(model, window=50, partial=False)  # a layer silent for 50 training batches is named once
    for epoch in range(start, epochs):
        t0 = time.time()
        seed_everything(seed, stage_index, epoch)
        if hasattr(data.train, "set_epoch"):
            data.train.set_epoch(epoch)
        model.train()
        mon = SpikeMonitor(model)
        bar = tqdm(total=steps, desc=f"{desc} {epoch + 1}/{epochs}", disable=bars_disabled(progress), leave=False)
        with mon, watch:
            sums = _train_epoch(model, net, data.train, opt, sched, cfg, steps, device, amp, epoch, mon, bar, criterion,
                                avg)
        bar.close()
        tested = epoch + 1 == epochs or (eval_every > 0 and (epoch + 1) % eval_every == 0)
        with avg.applied(model) if avg else nullcontext():
            ev = evaluate(model, data.test, device, max_batches=eval_batches, progress=progress, desc="test") \
                if tested else None
        seconds += time.time() - t0
        rec = _epoch_record(epoch, sums, ev, opt, mon, seconds, device)
        history.append(rec)
        if progress:
            _log_epoch(desc, epoch, epochs, rec, ev, bool(mon.layers), seconds)
        train_state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch + 1,
                       "history": history, "seconds": seconds}
        if avg:
            train_state["ema"] = avg.state_dict()
        if dist_info().is_main:
            save_checkpoint(resume, model, header, train_state)
        barrier()
        if on_epoch_end:
            on_epoch_end(epoch, rec, mon.rates() if mon.layers else {})
    if avg:
        avg.copy_to(model)  # the stage's result is the average
    if ev is None:  # resumed after the last epoch had already been saved
        ev = evaluate(model, data.test, device, max_batches=eval_batches, progress=progress, desc="test")
    return FitResult(history, seconds, start, ev)


def _resume(resume: Path, model, opt, sched, device, avg: WeightAverage | None = None) -> tuple[int, list, float]:
    """Restore model, optimizer, scheduler (and the weight average) from ``last.pt`` if present:
    ``(start epoch, history, seconds)``."""
    if not resume.exists():
        return 0, [], 0.0
    raw = load_raw(resume, map_location=device)
    model.load_state_dict(raw["state_dict"])
    ts = raw.get("train_state", {})
    opt.load_state_dict(ts["optimizer"])
    sched.load_state_dict(ts["scheduler"])
    if avg is not None:
        if "ema" not in ts:
            raise CheckpointError(f"{resume} was saved without a weight average but the stage now keeps one (ema); "
                                  "rerun the stage with --restart, or drop ema")
        try:
            avg.load_state_dict(ts["ema"])
        except (KeyError, TypeError, RuntimeError) as exc:  # a damaged or foreign average
            raise CheckpointError(f"{resume} holds a weight average that does not fit this model ({exc}); rerun the "
                                  "stage with --restart") from None
    return int(ts["epoch"]), list(ts["history"]), float(ts["seconds"])


def _train_epoch(model, net, loader, opt, sched, cfg: OptimConfig, steps: int, device, amp: bool, epoch: int,
                 mon: SpikeMonitor, bar, criterion: Criterion, avg: WeightAverage | None = None) -> _Epoch:
    """One pass over (the first ``steps`` batches of) the training loader."""
    sums = _Epoch()
    for i, (x, y) in enumerate(loader):
        if i >= steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp):
            out = net(x)
            loss = criterion(out, x, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss.detach())} at epoch {epoch + 1}, batch {i + 1}; "
                                     "lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()  # thresholds and leaks were clamped back in range by the optimizer's step (param_groups)
        if avg is not None:
            avg.update(model)
        sums.loss_sum += float(loss.detach()) * y.numel()
        sums.correct += int((out.argmax(1) == y).sum())
        sums.seen += y.numel()
        post = {"loss": f"{sums.loss_sum / sums.seen:.4f}", "acc": f"{sums.correct / sums.seen:.4f}"}
        if mon.layers and i % 10 == 0:
            post["spikes"] = f"{mon.mean_rate():.3f}"
        bar.set_postfix(post)
        bar.update()
    return sums


def _epoch_record(epoch: int, sums: _Epoch, ev: dict | None, opt, mon: SpikeMonitor, seconds: float,
                  device) -> dict:
    """The epoch's history entry; under torchrun the training loss and accuracy are summed over the ranks."""
    seen = max(sums.seen, 1)
    rec = {"epoch": epoch + 1, "train_loss": sums.loss_sum / seen, "train_acc": sums.correct / seen,
           "test_acc": ev["acc"] if ev else None, "test_loss": ev["loss"] if ev else None,
           "lr": opt.param_groups[0]["lr"], "seconds": seconds}
    if mon.layers:
        rec["train_spike_rate"] = mon.mean_rate()
        rec["test_spike_rate"] = ev["spike_rate"]["mean"] if ev else None
    if dist_info().enabled:  # report the global training loss and accuracy
        loss_sum, correct, seen = all_reduce_sum([sums.loss_sum, sums.correct, sums.seen], device)
        rec.update(train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1))
    return rec


def _log_epoch(desc: str, epoch: int, epochs: int, rec: dict, ev: dict | None, spiking: bool, seconds: float):
    extra = f", spikes/neuron {rec['test_spike_rate']:.3f}" if spiking and ev else ""
    test = f", test acc {ev['acc']:.4f}" if ev else ""
    tqdm.write(f"  [{desc}] epoch {epoch + 1}/{epochs}: loss {rec['train_loss']:.4f}, "
               f"train acc {rec['train_acc']:.4f}{test}{extra} ({seconds:.0f} s)")
