"""Robustness studies: accuracy under perturbations, white-box and black-box (transfer) attacks over an epsilon
sweep and Gaussian noise over a sigma sweep, as a JSON-ready dict, a text table and a plot.

The protocol follows Sharmin et al. ("A comprehensive analysis on adversarial robustness of spiking neural
networks", IJCNN 2019; "Inherent adversarial robustness of deep spiking neural networks", ECCV 2020): white-box
examples are crafted on the evaluated model, black-box ones on a source model (e.g. the ANN twin) and evaluated on
the target; the noise baseline follows Kim & Panda (Frontiers in Neuroscience 2021).
"""

from __future__ import annotations

import math
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, Sequence

import torch
from torch import nn

from spikeforge.analysis.attacks.base import ATTACKS, Attack, check_fraction, seeded
from spikeforge.analysis.attacks.noise import GaussianNoise
from spikeforge.analysis.common import batches, eval_mode, is_spiking, spiking_neurons
from spikeforge.errors import ConfigError
from spikeforge.neuron.surrogate import get_surrogate
from spikeforge.utils import bars_disabled, text_table

#: ``compare(target, clean, perturbed) -> {metric: per-image scores [B]}`` (NaN: undefined for that image), e.g.
#: :class:`spikeforge.analysis.explain.consistency.MapConsistency`.
Compare = Callable[[nn.Module, torch.Tensor, torch.Tensor], Dict[str, torch.Tensor]]

__all__ = ["Compare", "accuracy", "consistency_table", "describe_model", "make_attack", "parse_values", "plot_robustness", "robustness",
           "robustness_table"]


def make_attack(name: str, model: nn.Module, eps: float, *, alpha: float | None = None, steps: int = 7,
                eot_iter: int = 4, random_start: bool = True, **kw) -> Attack:
    """Attack by name (``fgsm``, ``pgd``, ``eotpgd``; see :data:`~spikeforge.analysis.attacks.ATTACKS`).
    ``alpha=None`` gives ``eps / 4`` (Sharmin et al.'s 2/255 at 8/255); ``steps``, ``alpha``, ``eot_iter`` and
    ``random_start`` are ignored by FGSM. Other keywords go to :class:`~spikeforge.analysis.attacks.Attack`."""
    return ATTACKS.get(name).from_budget(model, eps, alpha=alpha, steps=steps, eot_iter=eot_iter,
                                         random_start=random_start, **kw)


@torch.no_grad()
def _correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> int:
    with eval_mode(model):
        return int((model(images).argmax(1) == labels).sum())


def accuracy(model: nn.Module, loader, perturb: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             *, max_batches: int | None = None, device=None) -> float:
    """Accuracy (fraction) of ``model`` in eval mode on ``loader``, optionally on ``perturb(images, labels)``
    (an :class:`~spikeforge.analysis.attacks.Attack` crafted on this model for white-box, on another model for
    black-box transfer)."""
    correct = total = 0
    for x, y in batches(loader, max_batches):
        if device is not None:
            x, y = x.to(device), y.to(device)
        if perturb is not None:
            x = perturb(x, y)
        correct += _correct(model, x, y)
        total += int(y.numel())
    return correct / max(total, 1)


def describe_model(model: nn.Module) -> str:
    """``"ANN"`` or ``"SNN T=5, direct, LIF leak 0.9"``-style label (mean leak over layers) for tables and plots."""
    if not getattr(model, "spiking", False):
        return "ANN"
    leaks = [float(n.leak.detach().mean()) for n in spiking_neurons(model)]
    leak = sum(leaks) / len(leaks) if leaks else 1.0
    kind = "IF" if leak == 1.0 else f"LIF leak {leak:.3g}"
    return f"SNN T={model.timesteps}, {model.snn.encoding}, {kind}"


def _key(v: float) -> str:
    """Stable JSON key of an epsilon or sigma (``0.0314`` for 8/255)."""
    return f"{v:.6g}"


class _Study:
    """The counts of one :func:`robustness` run, filled batch by batch."""

    def __init__(self, models: dict[str, nn.Module], eps: list[float], noise: list[float], attack: str,
                 options: dict, surrogate, seed: int | None, compare: Compare | None = None):
        self.models, self.eps, self.noise = models, eps, noise
        self.attack, self.options, self.surrogate, self.seed = attack, options, surrogate, seed
        self.counts = {n: {"clean": 0, "white_box": [0] * len(eps), "noise": [0] * len(noise)} for n in models}
        self.black = [0] * len(eps)
        self.seconds = {n: 0.0 for n in models}
        self.total = 0
        self.compare = compare
        self.scores: dict[tuple[str, str], dict[str, list[float]]] = {}  # (kind, key) -> metric -> [sum, n, nan]

    def _compare(self, kind: str, key: str, clean: torch.Tensor, perturbed: torch.Tensor, seed: int | None) -> None:
        """Add the ``compare`` scores of the target's maps on ``clean`` against ``perturbed`` (in their own forked
        generator, so the accuracies do not depend on whether maps are compared)."""
        if self.compare is None:
            return
        with seeded(seed, clean.device):
            scores = self.compare(self.models["target"], clean, perturbed)
        acc = self.scores.setdefault((kind, key), {})
        for metric, values in scores.items():
            v = values.detach().double().reshape(-1).cpu()
            ok = ~torch.isnan(v)
            s = acc.setdefault(metric, [0.0, 0, 0])
            s[0] += float(v[ok].sum())
            s[1] += int(ok.sum())
            s[2] += int((~ok).sum())

    def _attack_on(self, model: nn.Module, eps: float, seed: int | None) -> Attack:
        sur = self.surrogate if is_spiking(model) else None
        return make_attack(self.attack, model, eps, surrogate=sur, seed=seed, **self.options)

    def batch(self, b: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """Clean, white-box, black-box and noisy counts of batch number ``b`` (seeds derived from ``b``, so a
        batch's result does not depend on the others)."""
        seed = self.seed
        cseed = None if seed is None else seed + 15485863 * (b + 1)  # map comparisons (Poisson draws)
        self.total += int(y.numel())
        self._compare("clean", "clean", x, x.clone(), cseed)
        with seeded(None if seed is None else seed + 104729 * (b + 1), x.device):  # Poisson evaluation draws
            for name, model in self.models.items():
                self.counts[name]["clean"] += _correct(model, x, y)
            for i, e in enumerate(self.eps):
                for name, model in self.models.items():
                    t0 = time.perf_counter()
                    adv = self._attack_on(model, e, None if seed is None else seed + b)(x, y)
                    self.seconds[name] += time.perf_counter() - t0
                    self.counts[name]["white_box"][i] += _correct(model, adv, y)
                    kind = "white_box" if name == "target" else "black_box"
                    self._compare(kind, _key(e), x, adv, cseed)
                    if name == "source":
                        self.black[i] += _correct(self.models["target"], adv, y)
            noise_seed = None if seed is None else seed + 7919 * (b + 1)
            for j, s in enumerate(self.noise):
                noisy = GaussianNoise(self.models["target"], std=s, seed=noise_seed)(x, y)
                self._compare("noise", _key(s), x, noisy, cseed)
                for name, model in self.models.items():
                    self.counts[name]["noise"][j] += _correct(model, noisy, y)

    def result(self, cfg: dict) -> dict:
        """The JSON-ready result (see :func:`robustness`)."""
        if self.total == 0:
            raise ConfigError("the loader yielded no images; check --batches and the dataset")
        total = self.total
        out = {"attack": cfg, "samples": total, "eps": self.eps, "noise": self.noise, "models": {}}
        for name, model in self.models.items():
            c = self.counts[name]
            out["models"][name] = {
                "model": describe_model(model),
                "clean": c["clean"] / total,
                "white_box": {_key(e): c["white_box"][i] / total for i, e in enumerate(self.eps)},
                "noise": {_key(s): c["noise"][j] / total for j, s in enumerate(self.noise)},
                "seconds_crafting": self.seconds[name],
            }
        if "source" in self.models:
            out["black_box"] = {_key(e): self.black[i] / total for i, e in enumerate(self.eps)}
        if self.compare is not None:
            out["models"]["target"]["consistency"] = self._consistency()
        return out

    def _consistency(self) -> dict:
        """``{"method", "clean", "white_box": {eps: {metric: mean}}, "black_box", "noise"}`` of the map scores
        (NaN scores left out of the means, counted in ``"<metric>_undefined"``)."""
        out: dict = {"method": getattr(self.compare, "method", lambda m: None)(self.models["target"])}
        for (kind, key), metrics in self.scores.items():
            row = {}
            for metric, (total, n, nan) in metrics.items():
                row[metric] = total / n if n else None
                if nan:
                    row[f"{metric}_undefined"] = nan
            if kind == "clean":
                out["clean"] = row
            else:
                out.setdefault(kind, {})[key] = row
        return out


def _attack_config(attack: str, target: nn.Module, eps: list[float], options: dict, surrogate,
                   seed: int | None) -> dict:
    """The attack's settings for the result (validated by building it once): ``alpha`` as given (``"eps/4"``)."""
    cfg = make_attack(attack, target, eps[0] if eps else 8 / 255, **options).config()
    cfg.pop("eps", None)
    cfg.pop("mode", None)
    if attack != "fgsm":
        cfg["alpha"] = "eps/4" if options["alpha"] is None else options["alpha"]
    cfg["surrogate"] = None if surrogate is None else get_surrogate(surrogate).to_config()
    cfg["seed"] = seed
    return cfg


def _progress(loader, max_batches: int | None, desc: str):
    from tqdm.auto import tqdm

    n_batches = len(loader) if max_batches is None else min(len(loader), max_batches)
    return tqdm(batches(loader, max_batches), total=n_batches, desc=desc, leave=False, disable=bars_disabled())


def robustness(target: nn.Module, loader, *, attack: str = "pgd", eps: Sequence[float] = (8 / 255,),
               source: nn.Module | None = None, noise: Sequence[float] = (), max_batches: int | None = None,
               alpha: float | None = None, steps: int = 7, eot_iter: int = 4, random_start: bool = True,
               surrogate=None, grad_estimator: str = "auto", seed: int | None = 0, device=None,
               progress: bool = False, compare: Compare | None = None) -> dict:
    """Clean and adversarial accuracy of ``target`` at every ``eps`` (white-box: crafted on ``target``), the
    protocol of Sharmin et al. (IJCNN 2019, ECCV 2020).

    With ``source``: the source's own clean and white-box accuracy, and the target's accuracy on examples crafted on
    the source (black-box transfer). ``noise``: accuracy under Gaussian noise of each sigma (clipped to ``[0, 1]``)
    for the target (and the source). ``surrogate`` is used for the spiking models only; ``seed`` (per batch, so a
    batch's result does not depend on the others) makes a run reproducible. Returns a JSON-ready dict with
    ``samples``, ``eps``, ``noise``, ``attack`` and per model (``target``, ``source``) ``clean``, ``white_box``
    (eps -> accuracy), ``noise`` (sigma -> accuracy), plus ``black_box`` (eps -> target accuracy) with a source.

    ``compare`` (:data:`Compare`, e.g. SAM consistency): scores the target's explanation maps of every clean batch
    against the perturbed batch (white-box, black-box, noise) and against a second simulation of the clean batch
    (``clean``); the means over images go to ``models.target.consistency`` (``method``, ``clean``, ``white_box``,
    ``black_box``, ``noise``: key -> metric -> mean). Comparisons run in their own forked generator, so the
    accuracies are the same with and without ``compare``.
    """
    eps = [check_fraction("eps", e) for e in eps]
    noise = [check_fraction("noise sigma", s, high=math.inf, open_low=True) for s in noise]
    models = {"target": target} if source is None else {"target": target, "source": source}
    options = dict(alpha=alpha, steps=steps, eot_iter=eot_iter, random_start=random_start,
                   grad_estimator=grad_estimator)
    cfg = _attack_config(attack, target, eps, options, surrogate, seed)
    study = _Study(models, eps, noise, attack, options, surrogate, seed, compare)
    it = _progress(loader, max_batches, f"{attack} x {len(eps)} eps") if progress else batches(loader, max_batches)
    for b, (x, y) in enumerate(it):
        if device is not None:
            x, y = x.to(device), y.to(device)
        study.batch(b, x, y)
    return study.result(cfg)


# ---------------------------------------------------------------------------------------------------------------
# text and plot


def _fmt_eps(e: float) -> str:
    k = e * 255
    if e > 0 and abs(k - round(k)) < 1e-3 and round(k) <= 16:  # CIFAR-style budgets; 0.2 stays 0.2
        return f"{round(k)}/255"
    return f"{e:g}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def robustness_table(result: dict) -> str:
    """Plain-text table of a :func:`robustness` result: one row per epsilon (and per noise sigma)."""
    models = result["models"]
    has_src = "source" in models
    head = ["eps", f"target {models['target']['model']}"]
    if has_src:
        head += [f"source {models['source']['model']}", "black-box (source -> target)"]
    rows = [["clean"] + [_pct(models["target"]["clean"])]
            + ([_pct(models["source"]["clean"]), "-"] if has_src else [])]
    for e in result["eps"]:
        k = _key(e)
        row = [_fmt_eps(e), _pct(models["target"]["white_box"][k])]
        if has_src:
            row += [_pct(models["source"]["white_box"][k]), _pct(result["black_box"][k])]
        rows.append(row)
    text = text_table(head, rows)
    if result["noise"]:
        nrows = [[f"{s:g}", _pct(models["target"]["noise"][_key(s)])]
                 + ([_pct(models["source"]["noise"][_key(s)])] if has_src else []) for s in result["noise"]]
        text += "\n\n" + text_table(["noise sigma", "target"] + (["source"] if has_src else []), nrows)
    if "consistency" in models["target"]:
        text += "\n\n" + consistency_table(result)
    return text


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def consistency_table(result: dict) -> str:
    """Plain-text table of the target's map consistency (clean vs perturbed; :func:`robustness`'s ``compare``):
    one row per perturbation, one column per metric."""
    cons = result["models"]["target"]["consistency"]
    rows = []
    if "clean" in cons:
        rows.append(("clean (2nd simulation)", cons["clean"]))
    labels = {"white_box": "white-box", "black_box": "black-box", "noise": "noise sigma"}
    for kind, label in labels.items():
        for key, row in cons.get(kind, {}).items():
            amount = _fmt_eps(float(key)) if kind != "noise" else f"{float(key):g}"
            rows.append((f"{label} {amount}", row))
    metrics = [m for m in dict.fromkeys(k for _, r in rows for k in r) if not m.endswith("_undefined")]
    head = [f"{cons.get('method') or 'map'} consistency"] + metrics
    return text_table(head, [[name] + [_num(r.get(m)) for m in metrics] for name, r in rows])


_STYLES = {"target": ("C1", "o"), "source": ("C0", "s")}


def _axes_style(ax, xlabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _plot_eps(ax, result: dict) -> None:
    models = result["models"]
    xs = [0.0] + list(result["eps"])
    for name, m in models.items():
        ys = [m["clean"]] + [m["white_box"][_key(e)] for e in result["eps"]]
        color, marker = _STYLES[name]
        ax.plot(xs, [100 * v for v in ys], marker=marker, color=color, label=f"{name} {m['model']} (white-box)")
    if "black_box" in result:
        ys = [models["target"]["clean"]] + [result["black_box"][_key(e)] for e in result["eps"]]
        ax.plot(xs, [100 * v for v in ys], marker="^", ls="--", color="C1",
                label=f"{models['target']['model']} (black-box from {models['source']['model']})")
    _axes_style(ax, "epsilon (L-inf, pixels in [0, 1])",
                f"{result['attack']['attack'].upper()} on {result['samples']} test images")


def _plot_noise(ax, result: dict) -> None:
    xs = [0.0] + list(result["noise"])
    for name, m in result["models"].items():
        ys = [m["clean"]] + [m["noise"][_key(s)] for s in result["noise"]]
        color, marker = _STYLES[name]
        ax.plot(xs, [100 * v for v in ys], marker=marker, color=color, label=f"{name} {m['model']}")
    _axes_style(ax, "Gaussian noise sigma (clipped to [0, 1])", "Gaussian noise")


def _plot_consistency(ax, result: dict, metric: str = "correlation") -> None:
    """Map consistency against epsilon (1 at epsilon 0: the clean map itself); the clean map against a second
    simulation (Poisson input) as a horizontal line."""
    cons = result["models"]["target"]["consistency"]
    for kind, style in (("white_box", "-o"), ("black_box", "--^")):
        rows = cons.get(kind) or {}
        if rows:
            ax.plot([0.0] + [float(k) for k in rows], [1.0] + [r.get(metric) for r in rows.values()], style,
                    color="C1", label=kind.replace("_", "-"))
    base = (cons.get("clean") or {}).get(metric)
    if base is not None and base < 0.999:
        ax.axhline(base, color="0.4", ls=":", label="clean, 2nd simulation")
    ax.set_xlabel("epsilon")
    ax.set_ylabel(f"{metric}, clean vs attacked map")
    ax.set_title(f"{cons.get('method') or 'map'} consistency ({result['models']['target']['model']})", fontsize=9)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_robustness(result: dict, path: str | Path) -> Path:
    """Accuracy against epsilon (white-box for each model, black-box transfer with a source), with noise accuracy
    against sigma, and with map consistency (``compare``) its correlation against epsilon, as a PNG (matplotlib,
    Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    draw = [_plot_eps] + ([_plot_noise] if result["noise"] else []) \
        + ([_plot_consistency] if "consistency" in result["models"]["target"] else [])
    fig = Figure(figsize=(5.2 * len(draw), 3.8), dpi=110)
    FigureCanvasAgg(fig)
    for i, fn in enumerate(draw):
        fn(fig.add_subplot(1, len(draw), i + 1), result)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def parse_values(text: str, what: str = "--eps", *, high: float = 1.0) -> list[float]:
    """``"2/255,4/255,0.1"`` -> floats; each value a fraction ``a/b`` or a decimal in ``(0, high]``."""
    if text is None or not str(text).strip():
        raise ConfigError(f"{what} needs at least one value, e.g. {what} 2/255,4/255,8/255")
    values = []
    for item in str(text).split(","):
        item = item.strip()
        try:
            v = float(Fraction(item))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{what}: {item!r} is not a number; write fractions like 8/255 or decimals like "
                              "0.1, separated by commas") from None
        if not (0.0 < v <= high):
            raise ConfigError(f"{what}: {item} = {v:g} is outside (0, {high:g}]; images are in [0, 1], "
                              "so use e.g. 8/255 or 0.1")
        values.append(v)
    return values
