"""Adversarial robustness of ANNs and SNNs on MNIST (Sharmin et al., ECCV 2020, at MNIST scale; docs/robustness.md).

    spikeforge run recipes/mnist-quickstart.yaml                 # once: the models (ann, convert, diet, iir-T3/T1)
    python benchmarks/robustness_study.py --run runs/mnist-quickstart --out docs/robustness

Compares the quickstart's ANN with SNN variants derived from the same run, under white-box FGSM and PGD (crafted on
each model itself; SNNs by BPTT through all T steps with their own surrogate, Poisson input by the straight-through
encoder), black-box FGSM/PGD crafted on an independently trained ANN of the same architecture (trained here, seed 1,
one epoch; Sharmin et al.'s black-box protocol), and Gaussian noise:

* T sweep, direct input: the DIET-SNN (T=5) and the IIR-SNNs (T=3, T=1) of the run, each trained at its T;
* leak, direct input: the T=5 DIET-SNN with every neuron's leak set to 0.9 or 0.8 at test time (not retrained);
* T sweep, Poisson input: the converted IF SNN (no spike training, like Sharmin's SNN-conv) with signed Poisson rate
  coding at T=5, 10 (and T=20 without white-box PGD, which costs about 4x T=5 per step on the CPU);
* estimator and surrogate ablations at one epsilon: Sharmin et al.'s first-layer estimator, EOT-PGD, and an
  attack-time arctangent surrogate.

Epsilons are in pixel units ([0, 1] images). MNIST networks are far more robust than CIFAR ones at the CIFAR budget
8/255 (~0.03), so the study also uses the MNIST-standard budgets 0.1, 0.2 and 0.3 (Madry et al. 2018). Writes
``study.json``, ``study.md`` (tables) and ``study.png`` into ``--out``. Everything is seeded (per batch for the attacks,
per model for Poisson evaluation draws), so a rerun on the CPU gives the same numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from spikeforge.analysis.attacks import EOTPGD, FGSM, PGD, GaussianNoise, describe_model
from spikeforge.data import DataConfig, build_data
from spikeforge.engine.checkpoint import load_checkpoint
from spikeforge.engine.recipe import parse_recipe
from spikeforge.engine.stages import run as run_recipe
from spikeforge.errors import ConfigError

FGSM_EPS = [8 / 255, 0.1, 0.2, 0.3]
PGD_EPS = [0.1, 0.2]  # white-box PGD at 0.3 leaves every model at <= 5% (pilot run), so it is not repeated
BB_EPS = [8 / 255, 0.1, 0.2, 0.3]
NOISE = [0.1, 0.3, 0.5]
ABLATION_EPS = 0.2
STEPS = 7  # PGD steps (Sharmin et al.), step size eps / 4 (their 2/255 at 8/255)

# name, stage of the quickstart run, encoding, T, leak (None: as trained), group, white-box PGD (False: skipped)
CONFIGS = [
    ("ANN", "ann", None, None, None, "ann", True),
    ("SNN direct T=5 (DIET)", "diet", "direct", 5, None, "time-direct", True),
    ("SNN direct T=3 (IIR)", "iir-T3", "direct", 3, None, "time-direct", True),
    ("SNN direct T=1 (IIR)", "iir-T1", "direct", 1, None, "time-direct", True),
    ("SNN direct T=5, leak 0.9", "diet", "direct", 5, 0.9, "leak", True),
    ("SNN direct T=5, leak 0.8", "diet", "direct", 5, 0.8, "leak", True),
    ("SNN Poisson T=5 (converted IF)", "convert", "poisson", 5, None, "time-poisson", True),
    ("SNN Poisson T=10 (converted IF)", "convert", "poisson", 10, None, "time-poisson", True),
    ("SNN Poisson T=20 (converted IF)", "convert", "poisson", 20, None, "time-poisson", False),
]


def fmt_eps(e: float) -> str:
    k = e * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-3 and k <= 16 else f"{e:g}"


def key(e: float) -> str:
    return f"{e:.6g}"


def variant(base: torch.nn.Module, encoding, timesteps, leak):
    model = copy.deepcopy(base).eval()
    if encoding is None:
        return model
    model.set_encoding(encoding)
    model.timesteps = timesteps
    if leak is not None:
        with torch.no_grad():
            for n in model.neurons():
                n.leak.fill_(leak)
    return model


def train_source(run_dir: Path, work: Path, ann_header: dict, data_dir, log) -> torch.nn.Module:
    """An ANN of the same architecture as the run's, trained independently (seed 1, one epoch): the black-box
    source (Sharmin et al. use a second, independently trained checkpoint)."""
    m = ann_header["model"]
    recipe = {"name": "robustness-source", "seed": 1, "device": "cpu",
              "data": {"dataset": ann_header["dataset"], "batch_size": 128, "test_batch_size": 1000,
                       **({"data_dir": str(data_dir)} if data_dir else {})},
              "model": {"arch": m["arch"], "width": m["width"], "hidden": m["hidden"], "dropout": m["dropout"]},
              "stages": [{"name": "ann", "kind": "ann", "epochs": 1, "optimizer": "adam", "lr": 2.0e-3,
                          "schedule": "cosine"}]}
    t0 = time.perf_counter()
    summary = run_recipe(parse_recipe(recipe), work / "source", device=torch.device("cpu"), progress=False)
    log(f"source ANN: test acc {summary['stages'][0]['test_acc']:.4f} ({time.perf_counter() - t0:.0f} s)")
    return load_checkpoint(work / "source" / "ann")[0].eval()


@torch.no_grad()
def correct(model, x, y) -> int:
    return int((model(x).argmax(1) == y).sum())


# ---------------------------------------------------------------------------------------------------------------
# --from-runs: tables and plots of recipes/robustness-study.yaml runs (one per seed), for docs/results/robustness-study

# label, training stage (None: the BNTT run's model read through `checkpoint`), PGD stage, FGSM stage
STUDY_MODELS = [
    ("ANN", "ann", "atk-ann", "atk-fgsm-ann"),
    ("DIET-SNN direct T=5", "diet", "atk-direct-T5", "atk-fgsm-direct-T5"),
    ("IIR-SNN direct T=3", "iir-T3", "atk-direct-T3", "atk-fgsm-direct-T3"),
    ("IIR-SNN direct T=1", "iir-T1", "atk-direct-T1", None),
    ("BNTT-SNN Poisson T=5", None, "atk-bntt", "atk-fgsm-bntt"),
    ("ANN, 1 epoch (matched)", "source-ann", "atk-ann-matched", "atk-fgsm-ann-matched"),
    ("DIET-SNN direct T=5 (matched)", "diet-matched", "atk-diet-matched", "atk-fgsm-diet-matched"),
    ("DIET T=5, leak 0.8 (test time)", "diet", "atk-direct-T5-leak0.8", None),
    ("converted IF, Poisson T=5", "convert", "atk-poisson-T5", None),
    ("converted IF, Poisson T=10", "convert", "atk-poisson-T10", None),
]
#: the models drawn in the plots (the first ones of STUDY_MODELS; the others are table rows only)
N_PLOTTED = 7
COLS_FGSM, COLS_PGD, COLS_BB = [8 / 255, 0.1, 0.2], [8 / 255, 0.1, 0.2], [0.1, 0.2]
COLS_NOISE = [0.1, 0.25, 0.5, 0.75]
CONS_COLS = [("FGSM", "fgsm", "white_box", 0.1), ("FGSM", "fgsm", "white_box", 0.2), ("PGD", "pgd", "white_box", 0.1),
             ("PGD", "pgd", "white_box", 0.2), ("BB-PGD", "pgd", "black_box", 0.2), ("noise", "pgd", "noise", 0.5)]


def _stage_metrics(run: Path, stage: str | None) -> dict | None:
    f = run / stage / "metrics.json" if stage else None
    return json.loads(f.read_text()) if f and f.is_file() else None


def _train_acc(run: Path, train: str | None, attack_stage: str) -> float | None:
    """Full-test-set clean accuracy of the model a PGD stage attacks (the BNTT run's through `checkpoint`)."""
    if train is not None:
        m = _stage_metrics(run, train)
        return m and m["test_acc"]
    cfg = json.loads((run / attack_stage / "stage.json").read_text())["config"]["stage"]
    ckpt = (run / cfg["checkpoint"]).resolve()
    f = (ckpt.parent if ckpt.suffix == ".pt" else ckpt) / "metrics.json"
    return json.loads(f.read_text())["test_acc"] if f.is_file() else None


def collect_run(run: Path) -> dict:
    """Per model of :data:`STUDY_MODELS`: full-test clean accuracy, the attack stages' robustness results."""
    rows = {}
    for label, train, pgd, fgsm in STUDY_MODELS:
        mp, mf = _stage_metrics(run, pgd), _stage_metrics(run, fgsm)
        if mp is None:
            continue
        rows[label] = {"test_acc": _train_acc(run, train, pgd), "pgd": mp["robustness"],
                       "fgsm": mf and mf["robustness"], "model": mp["model"]}
    return rows


def _get(row: dict | None, kind: str, where: str, e: float):
    if row is None or row.get(kind) is None:
        return None
    res = row[kind]
    if where == "black_box":
        return res.get("black_box", {}).get(key(e))
    return res["models"]["target"][where].get(key(e))


def _cons(row: dict | None, kind: str, where: str, e: float, metric: str):
    if row is None or row.get(kind) is None:
        return None
    c = row[kind]["models"]["target"].get("consistency")
    if not c:
        return None
    entry = c["clean"] if where == "clean" else c.get(where, {}).get(key(e))
    return entry and entry.get(metric)


def _seeds(vals: list, fmt) -> str:
    vals = [v for v in vals]
    if all(v is None for v in vals):
        return "–"
    return " / ".join("–" if v is None else fmt(v) for v in vals)


def study_markdown(runs: list[Path], collected: list[dict]) -> str:
    p1 = lambda v: f"{100 * v:.1f}"  # noqa: E731
    p2 = lambda v: f"{100 * v:.2f}"  # noqa: E731
    labels = [lb for lb, *_ in STUDY_MODELS if any(lb in c for c in collected)]
    seeds = " / ".join(f"seed {json.loads((r / 'summary.json').read_text()).get('seed', i) if (r / 'summary.json').is_file() else i}"
                       for i, r in enumerate(runs))
    n = next(iter(collected[0].values()))["pgd"]["samples"]
    head = (["model", "clean (10k test)", f"clean ({n})"] + [f"FGSM {fmt_eps(e)}" for e in COLS_FGSM]
            + [f"PGD {fmt_eps(e)}" for e in COLS_PGD] + [f"BB-PGD {fmt_eps(e)}" for e in COLS_BB]
            + [f"noise σ={s:g}" for s in COLS_NOISE])
    lines = [f"Accuracy (%) per seed ({seeds}); white-box FGSM and PGD (7 steps of ε/4, random start) crafted through "
             f"all T steps on each model, black-box (BB) PGD crafted on the independent source ANN, Gaussian noise "
             f"clipped to [0, 1]; {n} test images ('–': not run).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lb in labels:
        rs = [c.get(lb) for c in collected]
        cells = [_seeds([r and r["test_acc"] for r in rs], p2), _seeds([r and r["pgd"]["models"]["target"]["clean"]
                                                                     for r in rs], p1)]
        cells += [_seeds([_get(r, "fgsm", "white_box", e) for r in rs], p1) for e in COLS_FGSM]
        cells += [_seeds([_get(r, "pgd", "white_box", e) for r in rs], p1) for e in COLS_PGD]
        cells += [_seeds([_get(r, "pgd", "black_box", e) for r in rs], p1) for e in COLS_BB]
        cells += [_seeds([_get(r, "pgd", "noise", s) for r in rs], p1) for s in COLS_NOISE]
        lines.append(f"| {lb} | " + " | ".join(cells) + " |")
    lines += ["", cons_markdown(labels, collected)]
    return "\n".join(lines) + "\n"


def cons_markdown(labels: list[str], collected: list[dict]) -> str:
    f3 = lambda v: f"{v:.2f}"  # noqa: E731
    out = []
    for metric, what in (("correlation", "Pearson correlation"), ("topk", "top-10% overlap")):
        head = ["model", "map", "clean (2nd simulation)"] + [f"{a} {fmt_eps(e) if w != 'noise' else f'σ={e:g}'}"
                                                             for a, _, w, e in CONS_COLS]
        out += [f"Map consistency, {what} of the clean and perturbed maps (SAM for SNNs, Grad-CAM for the ANN; "
                "1 = unchanged), per seed:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for lb in labels:
            rs = [c.get(lb) for c in collected]
            method = next((r["pgd"]["models"]["target"].get("consistency", {}).get("method") for r in rs if r), None)
            if method is None:
                continue
            cells = [method, _seeds([_cons(r, "pgd", "clean", 0, metric) for r in rs], f3)]
            cells += [_seeds([_cons(r, k, w, e, metric) for r in rs], f3) for _, k, w, e in CONS_COLS]
            out.append(f"| {lb} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def study_plots(collected: list[dict], out: Path) -> list[Path]:
    """accuracy.png (PGD, FGSM, black-box PGD against ε; noise against σ) and sam_consistency.png (correlation and
    top-k overlap against ε / σ), seed 0 solid, seed 1 dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = [lb for lb, *_ in STUDY_MODELS[:N_PLOTTED] if any(lb in c for c in collected)]
    colors = {lb: f"C{i}" for i, lb in enumerate(labels)}
    panels = [("PGD (white-box)", "pgd", "white_box"), ("FGSM (white-box)", "fgsm", "white_box"),
              ("PGD (black-box, crafted on an independent ANN)", "pgd", "black_box"), ("Gaussian noise", "pgd", "noise")]
    paths = []
    fig = Figure(figsize=(18, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    for i, (title, kind, where) in enumerate(panels):
        ax = fig.add_subplot(1, 4, i + 1)
        for s, coll in enumerate(collected):
            for lb in labels:
                r = coll.get(lb)
                if r is None or r.get(kind) is None:
                    continue
                res = r[kind]
                xs = res["noise"] if where == "noise" else res["eps"]
                ys = [_get(r, kind, where, e) for e in xs]
                ax.plot([0.0] + xs, [100 * res["models"]["target"]["clean"]] + [100 * y for y in ys],
                        marker="o", ms=3, ls="-" if s == 0 else "--", color=colors[lb],
                        label=lb if s == 0 else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("Gaussian σ" if where == "noise" else "ε (L∞, pixels in [0, 1])")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"MNIST, {len(collected)} seed(s)" + (": solid seed 0, dashed seed 1" if len(collected) > 1 else ""),
                 fontsize=10)
    paths.append(out / "accuracy.png")
    fig.savefig(paths[-1], bbox_inches="tight")
    paths.append(_consistency_plot(collected, labels, colors, out / "sam_consistency.png"))
    return paths


def _consistency_plot(collected: list[dict], labels: list[str], colors: dict, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(18, 8), dpi=100)
    FigureCanvasAgg(fig)
    panels = [("PGD (white-box)", "pgd", "white_box"), ("FGSM (white-box)", "fgsm", "white_box"),
              ("PGD (black-box)", "pgd", "black_box"), ("Gaussian noise", "pgd", "noise")]
    for row, (metric, what) in enumerate((("correlation", "Pearson r"), ("topk", "top-10% overlap"))):
        for i, (title, kind, where) in enumerate(panels):
            ax = fig.add_subplot(2, 4, 4 * row + i + 1)
            for s, coll in enumerate(collected):
                for lb in labels:
                    r = coll.get(lb)
                    if r is None or r.get(kind) is None or "consistency" not in r[kind]["models"]["target"]:
                        continue
                    res = r[kind]
                    xs = res["noise"] if where == "noise" else res["eps"]
                    ys = [_cons(r, kind, where, e, metric) for e in xs]
                    meth = res["models"]["target"]["consistency"]["method"]
                    ax.plot([0.0] + xs, [1.0] + ys, marker="o", ms=3, ls="-" if s == 0 else "--", color=colors[lb],
                            label=f"{lb} ({meth})" if s == 0 else None)
                    base = _cons(r, kind, "clean", 0, metric)
                    if base is not None and base < 0.999 and s == 0:
                        ax.axhline(base, color=colors[lb], ls=":", lw=1,
                                   label=f"{lb}: clean vs 2nd simulation")
            ax.set_title(f"{title}: {what}", fontsize=10)
            ax.set_xlabel("Gaussian σ" if where == "noise" else "ε")
            ax.set_ylabel(f"{what}, clean vs perturbed map")
            ax.set_ylim(-0.05 if metric == "topk" else -0.3, 1.05)
            ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Explanation-map consistency, clean vs perturbed map (same Poisson draws; dotted: the clean map "
                 "against an independent second simulation)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    return path


def from_runs(runs: list[Path], out: Path) -> int:
    """Write table.md, accuracy.png and sam_consistency.png for the runs (one per seed) into ``out``."""
    collected = [collect_run(r) for r in runs]
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(study_markdown(runs, collected))
    for p in [out / "table.md", *study_plots(collected, out)]:
        print(f"wrote {p}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/mnist-quickstart", help="quickstart run directory (ann, convert, diet, "
                                                                  "iir-T3, iir-T1)")
    p.add_argument("--out", default="docs/robustness", help="where study.json/.md/.png go")
    p.add_argument("--work", default="runs/robustness-study", help="where the black-box source ANN is trained")
    p.add_argument("--samples", type=int, default=400, help="test images (first N of the test set)")
    p.add_argument("--data-dir", help="dataset directory (default $SPIKEFORGE_DATA)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replot", action="store_true", help="only rewrite study.md and study.png from study.json")
    p.add_argument("--from-runs", nargs="+", type=Path, metavar="RUN",
                   help="runs of recipes/robustness-study.yaml (one per seed): write table.md, accuracy.png and "
                        "sam_consistency.png into --out instead of running the grid")
    args = p.parse_args(argv)
    if args.from_runs:
        return from_runs(args.from_runs, Path(args.out))
    if args.replot:
        result = json.loads((Path(args.out) / "study.json").read_text())
        (Path(args.out) / "study.md").write_text(markdown(result))
        plot(result, Path(args.out) / "study.png")
        return 0
    torch.set_num_threads(args.threads)
    run_dir, out, work = Path(args.run), Path(args.out), Path(args.work)
    start, cpu_start = time.perf_counter(), time.process_time()

    def log(msg):
        print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)

    stages = {}
    for st in ("ann", "convert", "diet", "iir-T3", "iir-T1"):
        if not (run_dir / st / "model.pt").is_file():
            raise ConfigError(f"{run_dir / st / 'model.pt'} is missing; run `spikeforge run "
                              "recipes/mnist-quickstart.yaml` first and pass its directory with --run")
        stages[st] = load_checkpoint(run_dir / st)
    dataset = stages["ann"][1]["dataset"]
    data = build_data(DataConfig(dataset=dataset, data_dir=args.data_dir, test_batch_size=100,
                                 test_subset=args.samples))
    batches = list(data.test)
    n = sum(int(y.numel()) for _, y in batches)
    source = train_source(run_dir, work, stages["ann"][1], args.data_dir, log)

    # black-box examples: crafted once on the source ANN, evaluated on every model
    bb = {"fgsm": {}, "pgd": {}}
    src_acc = {"fgsm": {}, "pgd": {}}
    for e in BB_EPS:
        for name in ("fgsm", "pgd"):
            advs, ok = [], 0
            for b, (x, y) in enumerate(batches):
                atk = FGSM(source, eps=e) if name == "fgsm" else PGD(source, eps=e, alpha=e / 4, steps=STEPS,
                                                                     seed=args.seed + b)
                adv = atk(x, y)
                ok += correct(source, adv, y)
                advs.append(adv)
            bb[name][key(e)] = advs
            src_acc[name][key(e)] = ok / n
    log("black-box examples crafted on the source ANN")

    rows = []
    for i, (label, stage, enc, steps, leak, group, do_pgd) in enumerate(CONFIGS):
        model = variant(stages[stage][0], enc, steps, leak)
        torch.manual_seed(1000 * (args.seed + 1) + i)  # Poisson evaluation draws
        t0 = time.perf_counter()
        row = {"name": label, "stage": stage, "group": group, "model": describe_model(model),
               "timesteps": steps, "encoding": enc or "-", "leak": leak if leak is not None else
               (None if enc is None else round(sum(model.leaks()) / len(model.leaks()), 4)),
               "clean": 0.0, "fgsm": {}, "pgd": {}, "bb_fgsm": {}, "bb_pgd": {}, "noise": {}}
        clean = sum(correct(model, x, y) for x, y in batches)
        row["clean"] = clean / n
        for e in FGSM_EPS:
            row["fgsm"][key(e)] = sum(correct(model, FGSM(model, eps=e)(x, y), y) for x, y in batches) / n
        for e in PGD_EPS if do_pgd else []:
            row["pgd"][key(e)] = sum(correct(model, PGD(model, eps=e, alpha=e / 4, steps=STEPS,
                                                        seed=args.seed + b)(x, y), y)
                                     for b, (x, y) in enumerate(batches)) / n
        for name in ("fgsm", "pgd"):
            for e in BB_EPS:
                row[f"bb_{name}"][key(e)] = sum(correct(model, adv, y) for adv, (_, y)
                                                in zip(bb[name][key(e)], batches)) / n
        for s in NOISE:
            row["noise"][key(s)] = sum(correct(model, GaussianNoise(model, std=s, seed=args.seed + 31 * b)(x, y), y)
                                       for b, (x, y) in enumerate(batches)) / n
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        log(f"{label}: clean {row['clean']:.3f}, PGD {row['pgd']}, black-box PGD {row['bb_pgd']}")

    # ablations at one epsilon (white-box PGD)
    e = ABLATION_EPS
    ablations = []
    plans = [
        ("SNN direct T=5 (DIET)", "diet", "direct", 5, dict(surrogate="atan"), "attack-time surrogate atan (alpha 2)"),
        ("SNN Poisson T=5 (converted IF)", "convert", "poisson", 5, dict(grad_estimator="sharmin"),
         "Sharmin et al. first-layer estimator"),
        ("SNN Poisson T=5 (converted IF)", "convert", "poisson", 5, dict(eot_iter=4), "EOT-PGD, 4 samples per step"),
        ("SNN Poisson T=10 (converted IF)", "convert", "poisson", 10, dict(grad_estimator="sharmin"),
         "Sharmin et al. first-layer estimator"),
    ]
    for j, (label, stage, enc, steps, kw, what) in enumerate(plans):
        model = variant(stages[stage][0], enc, steps, None)
        torch.manual_seed(5000 + j)
        t0 = time.perf_counter()
        ok = 0
        for b, (x, y) in enumerate(batches):
            kw2 = dict(kw)
            cls = EOTPGD if "eot_iter" in kw2 else PGD
            atk = cls(model, eps=e, alpha=e / 4, steps=STEPS, seed=args.seed + b, **kw2)
            ok += correct(model, atk(x, y), y)
        base = next(r for r in rows if r["name"] == label)["pgd"][key(e)]
        ablations.append({"model": label, "variant": what, "eps": e, "acc": ok / n, "default_pgd_acc": base,
                          "seconds": time.perf_counter() - t0})
        log(f"ablation {label} / {what}: {ok / n:.3f} (default PGD {base:.3f})")

    result = {"dataset": dataset, "samples": n, "run": str(run_dir),
              "source": {"model": "ANN (seed 1, 1 epoch)", "clean": sum(correct(source, x, y) for x, y in batches) / n,
                         "white_box_fgsm": src_acc["fgsm"], "white_box_pgd": src_acc["pgd"]},
              "protocol": {"fgsm_eps": FGSM_EPS, "pgd_eps": PGD_EPS, "black_box_eps": BB_EPS, "noise": NOISE,
                           "pgd": {"steps": STEPS, "alpha": "eps/4", "random_start": True},
                           "grad_estimator": "auto (BPTT; straight-through Poisson encoder)",
                           "threads": args.threads, "seed": args.seed},
              "rows": rows, "ablations": ablations, "seconds": time.perf_counter() - start,
              "cpu_seconds": time.process_time() - cpu_start}
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "study.md").write_text(markdown(result))
    plot(result, out / "study.png")
    log(f"wrote {out / 'study.json'}, {out / 'study.md'}, {out / 'study.png'}")
    return 0


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def markdown(r: dict) -> str:
    lines = [f"# Robustness study: {r['dataset']}, first {r['samples']} test images",
             "",
             f"Accuracy in %. PGD: {r['protocol']['pgd']['steps']} steps of eps/4, random start. White-box: crafted "
             "on the model itself (SNN: BPTT through all T with the model's surrogate; Poisson: straight-through "
             "encoder). Black-box: crafted on an independently trained ANN "
             f"(clean {pct(r['source']['clean'])}%, white-box PGD "
             + ", ".join(f"{fmt_eps(float(k))}: {pct(v)}" for k, v in r["source"]["white_box_pgd"].items())
             + f"). Total time {r['seconds']:.0f} s wall ({r['cpu_seconds']:.0f} s CPU) with "
             f"{r['protocol']['threads']} CPU threads. Standard error of an accuracy p on n images: sqrt(p(1-p)/n), at most "
             f"{50 / r['samples'] ** 0.5:.1f} points here.",
             "", "## White-box", ""]
    fe, pe = r["protocol"]["fgsm_eps"], r["protocol"]["pgd_eps"]
    head = ["model", "clean"] + [f"FGSM {fmt_eps(e)}" for e in fe] + [f"PGD {fmt_eps(e)}" for e in pe]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in r["rows"]:
        cells = [row["name"], pct(row["clean"])] + [pct(row["fgsm"].get(key(e))) for e in fe] + \
                [pct(row["pgd"].get(key(e))) for e in pe]
        lines.append("| " + " | ".join(cells) + " |")
    be, ns = r["protocol"]["black_box_eps"], r["protocol"]["noise"]
    lines += ["", "## Black-box (crafted on the independent ANN) and Gaussian noise", ""]
    head = ["model"] + [f"BB-FGSM {fmt_eps(e)}" for e in be] + [f"BB-PGD {fmt_eps(e)}" for e in be] + \
           [f"noise σ={s:g}" for s in ns]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in r["rows"]:
        cells = [row["name"]] + [pct(row["bb_fgsm"][key(e)]) for e in be] + [pct(row["bb_pgd"][key(e)]) for e in be] \
            + [pct(row["noise"][key(s)]) for s in ns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"## Ablations (white-box PGD, eps = {fmt_eps(r['ablations'][0]['eps']) if r['ablations'] else '-'})",
              "", "| model | attack variant | accuracy | default PGD |", "|---|---|---|---|"]
    for a in r["ablations"]:
        lines.append(f"| {a['model']} | {a['variant']} | {pct(a['acc'])} | {pct(a['default_pgd_acc'])} |")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 8.5), dpi=100)
    FigureCanvasAgg(fig)
    colors = {"ann": ["black"], "time-direct": ["#08519c", "#4292c6", "#9ecae1"], "leak": ["#238b45", "#74c476"],
              "time-poisson": ["#d94801", "#fd8d3c", "#fdd0a2"]}
    used = {g: 0 for g in colors}
    styles = {}
    for row in r["rows"]:
        g = row["group"]
        styles[row["name"]] = dict(color=colors[g][used[g] % len(colors[g])], marker="o" if g != "ann" else "s")
        used[g] += 1
    panels = [("White-box PGD", "pgd", r["protocol"]["pgd_eps"]), ("White-box FGSM", "fgsm", r["protocol"]["fgsm_eps"]),
              ("Black-box PGD (crafted on an independent ANN)", "bb_pgd", r["protocol"]["black_box_eps"]),
              ("Gaussian noise (clipped to [0, 1])", "noise", r["protocol"]["noise"])]
    for i, (title, field, xs) in enumerate(panels):
        ax = fig.add_subplot(2, 2, i + 1)
        for row in r["rows"]:
            vals = [row[field].get(key(x)) for x in xs]
            if any(v is None for v in vals):
                continue
            ax.plot([0.0] + list(xs), [100 * row["clean"]] + [100 * v for v in vals], label=row["name"],
                    **styles[row["name"]], lw=1.6, ms=4)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("sigma" if field == "noise" else "epsilon (L-inf, pixels in [0, 1])")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        if field != "noise":
            ax.set_xlim(-0.01, 0.31)
        ax.grid(alpha=0.3)
    handles, labels = fig.axes[1].get_legend_handles_labels()  # FGSM: every model has a curve
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.subplots_adjust(hspace=0.35, right=0.78)
    fig.suptitle(f"ANN vs SNN robustness, {r['dataset']} ({r['samples']} test images)")
    fig.savefig(path, format="png", bbox_inches="tight")


if __name__ == "__main__":
    sys.exit(main())
