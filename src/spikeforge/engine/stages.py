"""Stages and the run: each stage reads the previous checkpoint, does one thing, writes ``model.pt`` + ``metrics.json``.

A stage directory with both files is finished and is skipped on a rerun; an interrupted training stage resumes from
its ``last.pt``. ``summary.json`` lists the finished stages in order.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from spikeforge.methods.convert import ann_to_snn, balance_thresholds
from spikeforge.analysis.energy import stage_energy_metrics
from spikeforge.errors import CheckpointError, ConfigError
from spikeforge.models import SNNConfig, TwinNet, build_model
from spikeforge.analysis.monitor import SpikeMonitor
from spikeforge.engine.recipe import AnnStage, BnttStage, ConvertStage, Recipe, SnnStage, StageConfig
from spikeforge.engine.checkpoint import MODEL_FILE, RESUME_FILE, atomic_write_json, load_checkpoint, save_checkpoint
from spikeforge.engine.distributed import barrier, local_batch_size
from spikeforge.engine.distributed import info as dist_info
from spikeforge.engine.train import evaluate, fit, seed_everything

METRICS_FILE = "metrics.json"


@dataclass
class Context:
    """What a stage runner gets: the recipe, where to write, the previous checkpoint, the data and the device."""

    recipe: Recipe
    out_dir: Path
    stage_dir: Path
    index: int
    previous: Path | None
    previous_metrics: dict | None
    data: object
    device: torch.device
    progress: bool = True

    def log(self, msg: str) -> None:
        if self.progress:
            tqdm.write(msg)


Runner = Callable[[StageConfig, Context], dict]
RUNNERS: dict[str, Runner] = {}


def register_runner(kind: str):
    def deco(fn: Runner) -> Runner:
        RUNNERS[kind] = fn
        return fn

    return deco


def _header(stage: StageConfig, ctx: Context, extra: dict | None = None) -> dict:
    return {"stage": stage.name, "kind": stage.kind, "recipe": ctx.recipe.name, "dataset": ctx.recipe.data.dataset,
            "stage_config": dataclasses.asdict(stage), **(extra or {})}


def _load_previous(ctx: Context, stage: StageConfig) -> tuple[TwinNet, dict]:
    if ctx.previous is None:
        raise ConfigError(f"stage {stage.name!r} ({stage.kind}) needs a previous stage's model; "
                          "put a training stage before it in the recipe")
    return load_checkpoint(ctx.previous)


def finish(stage: StageConfig, ctx: Context, model: TwinNet, metrics: dict) -> dict:
    """Write the stage's ``model.pt`` then ``metrics.json`` (which marks the stage finished); rank 0 only."""
    metrics = {"stage": stage.name, "kind": metrics.pop("kind", stage.kind),
               "timesteps": model.timesteps if model.spiking else None, **metrics}
    if dist_info().is_main:
        save_checkpoint(ctx.stage_dir / MODEL_FILE, model, _header(stage, ctx, {"metrics": _light(metrics)}))
        atomic_write_json(ctx.stage_dir / METRICS_FILE, metrics)
        resume = ctx.stage_dir / RESUME_FILE
        if resume.exists():
            resume.unlink()
    barrier()
    return metrics


def _light(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("history",)}


def _snn_summary(model: TwinNet) -> dict:
    return {"thresholds": model.thresholds(), "leaks": model.leaks()}


@register_runner("ann")
def run_ann(stage: AnnStage, ctx: Context) -> dict:
    r = ctx.recipe
    model = build_model(r.model)
    header = _header(stage, ctx)
    res = fit(model, ctx.data, stage.optim(), epochs=stage.epochs, stage_dir=ctx.stage_dir, device=ctx.device,
              seed=r.seed, stage_index=ctx.index, header=header, max_batches=stage.max_batches,
              eval_batches=stage.eval_batches, eval_every=stage.eval_every, amp=stage.amp, progress=ctx.progress,
              desc=stage.name)
    return finish(stage, ctx, model, {"test_acc": res.final_eval["acc"], "epochs": stage.epochs,
                                      "seconds": res.seconds, "history": res.history})


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
                                        disable=not progress, leave=False)):
            if i >= n:
                break
            x, y = x.to(device), y.to(device)
            outs = model.forward_cumulative(x, steps)
            for t, out in zip(steps, outs):
                correct[t] += int((out.argmax(1) == y).sum())
            total += int(y.numel())
    return {t: correct[t] / max(total, 1) for t in steps}


@register_runner("convert")
def run_convert(stage: ConvertStage, ctx: Context) -> dict:
    t0 = time.time()
    ann, head = _load_previous(ctx, stage)
    if ann.spiking:
        raise ConfigError(f"stage {stage.name!r} converts an ANN, but the previous stage ({head.get('stage')}) "
                          "holds an SNN; put the convert stage right after an 'ann' stage")
    overrides = dict(stage.snn)
    steps = stage.timesteps or overrides.pop("timesteps", None) or ctx.recipe.snn.timesteps
    overrides.pop("timesteps", None)
    cfg = ctx.recipe.snn.updated(**overrides, timesteps=steps)
    calib = ctx.data.calibration_batch(stage.calib_batch_size).to(ctx.device)
    ann.to(ctx.device)
    snn = ann_to_snn(ann, cfg, example=calib[:2]).to(ctx.device)
    ctx.log(f"  [{stage.name}] balancing thresholds on {len(calib)} images, {stage.sim_timesteps} steps, "
            f"percentile {stage.percentile}, scaling {stage.scaling}")
    balance_thresholds(snn, calib, timesteps=stage.sim_timesteps, percentile=stage.percentile,
                       scaling=stage.scaling, progress=ctx.progress)
    ann_acc = (ctx.previous_metrics or {}).get("test_acc")
    if ann_acc is None:
        ann_acc = evaluate(ann, ctx.data.test, ctx.device, max_batches=stage.eval_batches)["acc"]
    eval_steps = sorted(set(stage.eval_timesteps) | {steps})
    curve_batches = stage.curve_batches or stage.eval_batches
    same = curve_batches == stage.eval_batches
    # One simulation of max(T) steps gives the accuracy at every T (and the spike counts at the stage's T).
    with SpikeMonitor(snn) as mon:
        first = accuracy_over_time(snn, ctx.data.test, ctx.device, eval_steps if same else [steps],
                                   stage.eval_batches, ctx.progress)
    accs = first if same else accuracy_over_time(snn, ctx.data.test, ctx.device, eval_steps, curve_batches,
                                                 ctx.progress)
    rates = {k: v * steps for k, v in mon.rates(per_step=True).items()}
    tot = sum(mon.neurons[k] for k in rates)
    spike_rate = {**rates, "mean": sum(rates[k] * mon.neurons[k] for k in rates) / tot if tot else 0.0}
    for t in eval_steps:
        ctx.log(f"  [{stage.name}] T={t:5d}: test acc {accs[t]:.4f}  (ANN {ann_acc:.4f})")
    return finish(stage, ctx, snn, {
        "test_acc": first[steps], "ann_acc": ann_acc, "epochs": 0, "seconds": time.time() - t0,
        "acc_vs_timesteps": {str(t): a for t, a in accs.items()}, "curve_samples": _curve_samples(ctx, stage),
        "spike_rate": spike_rate,
        "percentile": stage.percentile, "scaling": stage.scaling, **_snn_summary(snn),
        **stage_energy_metrics(snn, ctx.data.test, ctx.device, max_batches=_energy_batches(stage, steps))})


def _curve_samples(ctx: Context, stage: ConvertStage) -> int:
    return _samples(ctx, stage.curve_batches or stage.eval_batches)


def _snn_for_stage(stage: SnnStage, ctx: Context) -> TwinNet:
    """The model an SNN stage starts from, with the stage's timesteps and SNN settings applied."""
    opt = stage.optim()
    overrides = {k: v for k, v in stage.snn.items() if k != "timesteps"}
    learn = {"learn_threshold": "threshold" in opt.train, "learn_leak": "leak" in opt.train}
    if stage.init == "scratch":
        cfg = ctx.recipe.snn.updated(**overrides, **learn)
        if stage.timesteps:
            cfg = cfg.updated(timesteps=stage.timesteps)
        return build_model(ctx.recipe.model, cfg)
    prev, head = _load_previous(ctx, stage)
    if prev.spiking:
        cfg = prev.snn.updated(**overrides, **learn)
        if stage.timesteps:
            cfg = cfg.updated(timesteps=stage.timesteps)
        model = build_model(prev.spec, cfg)
        missing, unexpected = model.load_state_dict(prev.state_dict(), strict=False)
        if unexpected or missing:
            raise CheckpointError(f"stage {stage.name!r}: previous SNN does not fit the new settings "
                                  f"(missing {missing}, unexpected {unexpected}); per_channel must not change")
        return model
    # An ANN: its weights with the configured (not balanced) thresholds, i.e. spike-based training from an ANN init.
    cfg = ctx.recipe.snn.updated(**overrides, **learn)
    if stage.timesteps:
        cfg = cfg.updated(timesteps=stage.timesteps)
    return ann_to_snn(prev, cfg)


@register_runner("snn")
def run_snn(stage: SnnStage, ctx: Context) -> dict:
    model, metrics = train_snn(stage, ctx)
    return finish(stage, ctx, model, metrics)


def train_snn(stage: SnnStage, ctx: Context) -> tuple[TwinNet, dict]:
    """BPTT training of an SNN stage (resumable); returns the model and its metrics (not yet written)."""
    model = _snn_for_stage(stage, ctx).to(ctx.device)
    extra = {}
    if stage.rebalance is not None and not (ctx.stage_dir / RESUME_FILE).exists():
        rb = {"percentile": 99.7, "sim_timesteps": model.timesteps, "scaling": 1.0, **stage.rebalance}
        calib = ctx.data.calibration_batch(rb.get("calib_batch_size")).to(ctx.device)
        ctx.log(f"  [{stage.name}] ABLATION: re-balancing thresholds at T={model.timesteps} (not in the reference code)")
        balance_thresholds(model, calib, timesteps=rb["sim_timesteps"], percentile=rb["percentile"],
                           scaling=rb["scaling"], progress=ctx.progress, rescale_bias=False)
        extra["rebalanced"] = rb
    start = {"thresholds": model.thresholds(), "leaks": model.leaks()}  # what training starts from
    header = _header(stage, ctx)
    res = fit(model, ctx.data, stage.optim(), epochs=stage.epochs, stage_dir=ctx.stage_dir, device=ctx.device,
              seed=ctx.recipe.seed, stage_index=ctx.index, header=header, max_batches=stage.max_batches,
              eval_batches=stage.eval_batches, eval_every=stage.eval_every, amp=stage.amp, progress=ctx.progress,
              desc=f"{stage.name} T={model.timesteps}")
    ev = res.final_eval
    metrics = {"kind": "iir" if stage.parent else "snn", "test_acc": ev["acc"], "epochs": stage.epochs,
               "seconds": res.seconds, "spike_rate": ev.get("spike_rate"), "encoding": model.snn.encoding,
               "surrogate": model.snn.surrogate, "initial": start, **_snn_summary(model), "history": res.history,
               **extra}
    if stage.parent:
        metrics["parent"] = stage.parent
    if stage.eval_timesteps:
        accs = accuracy_over_time(model, ctx.data.test, ctx.device, stage.eval_timesteps, stage.eval_batches)
        metrics["acc_vs_timesteps"] = {str(t): a for t, a in accs.items()}
    metrics.update(stage_energy_metrics(model, ctx.data.test, ctx.device, max_batches=_energy_batches(stage)))
    return model, metrics


@register_runner("bntt")
def run_bntt(stage: BnttStage, ctx: Context) -> dict:
    """BNTT from scratch, then the early-exit analysis: gamma profile, exit time, accuracy against exit time."""
    from spikeforge.methods.bntt_exit import exit_time, gamma_profile, plot_gammas

    if stage.init == "scratch" and not ctx.recipe.model.bntt:
        raise ConfigError(f"stage {stage.name!r} (bntt) needs a BNTT model: set model.bntt: true or use "
                          "vgg9_bntt / vgg11_bntt")
    model, metrics = train_snn(stage, ctx)
    metrics["kind"] = "bntt"
    profile = gamma_profile(model)
    exit_at = exit_time(profile, stage.exit_threshold)
    steps = list(range(1, model.timesteps + 1))
    curve_batches = stage.exit_curve_batches or stage.eval_batches
    accs = accuracy_over_time(model, ctx.data.test, ctx.device, steps, curve_batches, ctx.progress)
    metrics.update({"gamma_profile": profile.tolist(), "exit_threshold": stage.exit_threshold, "exit_time": exit_at,
                    "exit_acc": accs[exit_at], "acc_vs_exit_time": {str(t): a for t, a in accs.items()},
                    "exit_curve_samples": _samples(ctx, curve_batches)})
    ctx.log(f"  [{stage.name}] early exit at t={exit_at} of {model.timesteps} (layer-mean gamma < "
            f"{stage.exit_threshold:g} afterwards): acc {accs[exit_at]:.4f} vs {accs[model.timesteps]:.4f} at "
            f"T={model.timesteps}")
    if dist_info().is_main:
        plot_gammas(profile, ctx.stage_dir / "bntt_gamma.png", stage.exit_threshold, exit_at, accs)
    return finish(stage, ctx, model, metrics)


def _samples(ctx: Context, batches: int | None) -> int:
    size = ctx.data.test.dataset_size
    return size if batches is None else min(size, batches * ctx.data.test.batch_size)


def _energy_batches(stage, steps: int = 1) -> int:
    """Spike rates for the energy estimate come from a few test batches (they vary little between batches)."""
    return min(stage.eval_batches or 2, 2 if steps <= 32 else 1)


@register_runner("attack")
def run_attack(stage, ctx: Context) -> dict:
    """White-box (and black-box, noise) robustness of the input model; writes a table, JSON and a plot."""
    from spikeforge.analysis.attacks import describe_model, plot_robustness, robustness, robustness_table

    t0 = time.time()
    model, head = _load_previous(ctx, stage)
    if stage.snn:
        if not model.spiking:
            raise ConfigError(f"stages.{stage.name}.snn applies to SNNs, but the input model is an ANN")
        over = dict(stage.snn)
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
    source = None
    if stage.black_box:
        source, _ = load_checkpoint(ctx.out_dir / stage.black_box / MODEL_FILE)
        source.to(ctx.device)
    model.to(ctx.device)
    res = robustness(model, ctx.data.test, attack=stage.attack, eps=stage.eps, source=source, noise=stage.noise,
                     max_batches=stage.batches, alpha=stage.alpha, steps=stage.steps, eot_iter=stage.eot_iter,
                     surrogate=stage.surrogate, grad_estimator=stage.grad_estimator, seed=ctx.recipe.seed,
                     device=ctx.device, progress=ctx.progress)
    if dist_info().is_main:
        (ctx.stage_dir / "robustness.txt").write_text(robustness_table(res) + "\n")
        plot_robustness(res, ctx.stage_dir / "robustness.png")
    ctx.log(robustness_table(res))
    return finish(stage, ctx, model, {"kind": "attack", "test_acc": res["models"]["target"]["clean"],
                                      "model": describe_model(model), "epochs": 0, "seconds": time.time() - t0,
                                      "robustness": res})


def stage_finished(stage_dir: Path) -> bool:
    return (stage_dir / METRICS_FILE).is_file() and (stage_dir / MODEL_FILE).is_file()


def run(recipe: Recipe, out_dir: Path, *, device: torch.device, data=None, progress: bool = True,
        on_stage_end: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) every stage of ``recipe`` into ``out_dir``; returns the summary."""
    from spikeforge.data import build_data

    out_dir = Path(out_dir)
    dinfo = dist_info()
    if dinfo.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _check_same_recipe(recipe, out_dir)
    barrier()
    if data is None and dinfo.enabled:
        local = dataclasses.replace(recipe.data, batch_size=local_batch_size(recipe.data.batch_size, dinfo.world_size))
        data = build_data(local, device=device, seed=recipe.seed, rank=dinfo.rank, world_size=dinfo.world_size)
        data.test = build_data(recipe.data, device=device, seed=recipe.seed).test  # whole test set, split by batch
    if data is None:
        data = build_data(recipe.data, device=device, seed=recipe.seed)
    if recipe.data.dataset == "imagefolder" and "num_classes" not in (recipe.source.get("model") or {}):
        recipe.model.num_classes = data.num_classes  # discovered from the class folders
    summary = {"recipe": recipe.name, "stages": []}
    previous, previous_metrics = None, None
    done: dict[str, tuple[Path, dict]] = {}
    for index, stage in enumerate(recipe.stages):
        if stage.source is not None:
            previous, previous_metrics = done[stage.source]
        if stage.kind not in RUNNERS:
            raise ConfigError(f"no runner for stage kind {stage.kind!r}")
        sdir = out_dir / stage.name
        if stage_finished(sdir):
            metrics = json.loads((sdir / METRICS_FILE).read_text())
            if progress and dinfo.is_main:
                tqdm.write(f"[{stage.name}] already finished (test acc {metrics.get('test_acc', float('nan')):.4f}); "
                           "skipping")
        else:
            if progress and dinfo.is_main:
                tqdm.write(f"[{stage.name}] {stage.kind} stage"
                           + (" (resuming)" if (sdir / RESUME_FILE).exists() else ""))
            sdir.mkdir(parents=True, exist_ok=True)
            ctx = Context(recipe, out_dir, sdir, index, previous, previous_metrics, data, device,
                          progress and dinfo.is_main)
            seed_everything(recipe.seed, index, 10**6)  # model initialization is reproducible per stage
            metrics = RUNNERS[stage.kind](stage, ctx)
        summary["stages"].append(_light(metrics))
        if dinfo.is_main:
            atomic_write_json(out_dir / "summary.json", summary)
        if on_stage_end:
            on_stage_end(metrics)
        previous, previous_metrics = sdir / MODEL_FILE, metrics
        done[stage.name] = (previous, previous_metrics)
    return summary


def _field_defaults(cls) -> dict:
    """JSON-ready defaults of a config dataclass's fields that have one."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return json.loads(json.dumps(out))


def _check_same_recipe(recipe: Recipe, out_dir: Path) -> None:
    """Refuse to resume into a directory written by a different recipe (finished stages would not match)."""
    path = out_dir / "recipe.json"
    current = {"model": recipe.model.to_dict(), "data": dataclasses.asdict(recipe.data), "seed": recipe.seed,
               "snn": recipe.snn.to_dict(), "stages": recipe.stage_dicts()}
    current = json.loads(json.dumps(current))
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = None
        if old is not None:
            ignore = ("data_dir", "workers")
            for part, cls in (("model", type(recipe.model)), ("snn", type(recipe.snn))):
                if isinstance(old.get(part), dict):  # keys added in later versions: absent means their default
                    old[part] = {**_field_defaults(cls), **old[part]}
            for part in ("model", "seed", "snn"):
                if old.get(part) != current[part]:
                    raise ConfigError(f"{out_dir} holds a run of a different recipe ({part} differs); "
                                      "use another --out directory or delete this one")
            for i, (a, b) in enumerate(zip(old.get("stages", []), current["stages"])):
                if isinstance(a, dict):
                    a = {**_field_defaults(type(recipe.stages[i])), **a}
                if a != b and stage_finished(out_dir / b["name"]):
                    raise ConfigError(f"{out_dir}: finished stage {b['name']!r} was run with other settings; "
                                      "use another --out directory or delete that stage's directory")
            if {k: v for k, v in old.get("data", {}).items() if k not in ignore} != \
                    {k: v for k, v in current["data"].items() if k not in ignore}:
                raise ConfigError(f"{out_dir} holds a run with other data settings; use another --out directory")
    atomic_write_json(path, current)


from spikeforge.engine import stdp_stage as _stdp_stage  # noqa: E402,F401  (registers the stdp stage kind)
