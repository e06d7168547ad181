"""Run report: plots of a finished run and one self-contained HTML page (``report.html``, plots embedded as PNG).

Reads the run's ``summary.json`` (``{"recipe": name, "stages": [metrics, ...]}``) and each stage's
``<stage>/metrics.json`` (fuller: the summary drops the training history). Shown:

* the stage table (stage, kind, test accuracy, T, mean spike rate, energy ratio ANN/SNN, epochs, time);
* accuracy against timesteps: the curves of stages with ``acc_vs_timesteps`` (conversion sweeps, SNN stages with
  ``eval_timesteps``), the trained SNN stages as points at their ``T``, the ANN accuracy as a horizontal line;
* spike rate per neuron layer per stage (``metrics["spike_rate"]``: spikes per neuron per inference);
* energy per layer, ANN against SNN (``metrics["energy"]["layers"]`` written by
  :func:`spikeforge.analysis.energy.stage_energy_metrics`), with the membrane read/write term stacked on the SNN bars, and
  a table of energy totals per stage.

Each plot is also written as a PNG beside the page; every file is replaced atomically (a reader sees the old file or
the new one). Missing pieces (an ANN-only run, stages without energy) leave out the plots they would feed; the page
is always written. Matplotlib is used through its Agg canvas directly, so the global backend is left alone.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
from pathlib import Path
from typing import Any

from spikeforge.analysis.common import finite_or_none
from spikeforge.errors import ConfigError
from spikeforge import utils

REPORT_FILE = "report.html"
ACC_PNG = "accuracy_vs_timesteps.png"
RATE_PNG = "spike_rates.png"
ENERGY_PNG = "energy_per_layer.png"
SPIKING_KINDS = ("convert", "snn", "iir")


# ---------------------------------------------------------------------------------------------------------------
# gathering


def load_run(out_dir: str | Path, summary: dict | None = None) -> dict:
    """The run summary with each stage's full ``metrics.json`` merged in (summary values win)."""
    out_dir = Path(out_dir)
    if summary is None:
        path = out_dir / "summary.json"
        if not path.is_file():
            raise ConfigError(f"{out_dir} has no summary.json; pass a run directory written by 'spikeforge run'")
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:  # not UTF-8, or not JSON
            raise ConfigError(f"{path} is not valid JSON ({exc}); rerun 'spikeforge run' to rewrite it") from None
    if not isinstance(summary, dict):
        raise ConfigError(f"a run summary must be a dict with 'recipe' and 'stages', got {type(summary).__name__}")
    stages = []
    for st in summary.get("stages") or []:
        if not isinstance(st, dict):
            continue
        merged: dict[str, Any] = {}
        name = st.get("stage")
        mpath = out_dir / str(name) / "metrics.json" if name else None
        if mpath is not None and mpath.is_file():
            try:
                full = json.loads(mpath.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                full = None
            if isinstance(full, dict):
                merged.update(full)
        merged.update(st)
        stages.append(merged)
    return {"recipe": summary.get("recipe") or out_dir.name, "stages": stages}


def _rates(st: dict) -> dict[str, float]:
    sr = st.get("spike_rate")
    if not isinstance(sr, dict):
        return {}
    return {str(k): float(v) for k, v in sr.items() if k != "mean" and finite_or_none(v) is not None}


def _mean_rate(st: dict) -> float | None:
    sr = st.get("spike_rate")
    return finite_or_none(sr.get("mean")) if isinstance(sr, dict) else None


def _energy(st: dict) -> dict | None:
    en = st.get("energy")
    if isinstance(en, dict) and isinstance(en.get("layers"), list) and en["layers"]:
        return en
    return None


def _ratios(st: dict) -> tuple[float | None, float | None]:
    r1, r2 = finite_or_none(st.get("energy_ratio")), finite_or_none(st.get("energy_ratio_with_memory"))
    if r1 is None and (en := st.get("energy")) and isinstance(en, dict):
        r1, r2 = finite_or_none(en.get("energy_ratio")), finite_or_none(en.get("energy_ratio_with_memory"))
    return r1, r2


def _curve(st: dict) -> list[tuple[int, float]]:
    avt = st.get("acc_vs_timesteps")
    if not isinstance(avt, dict):
        return []
    pts = []
    for t, a in avt.items():
        try:
            pts.append((int(t), float(a)))
        except (TypeError, ValueError):
            continue
    return sorted(pts)


# ---------------------------------------------------------------------------------------------------------------
# plots


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _stage_colors(stages: list[dict]) -> dict[int, tuple]:
    """One colour per stage (by position in the run), the same in every plot."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {id(st): cmap(i % 10) for i, st in enumerate(stages)}


def plot_accuracy(stages: list[dict]) -> bytes | None:
    """Accuracy vs timesteps: curves (acc_vs_timesteps), trained SNN stages as points, ANN accuracy as a line."""
    curves = [(st, _curve(st)) for st in stages]
    curves = [(st, c) for st, c in curves if c]
    points = [st for st in stages if st.get("kind") != "ann" and finite_or_none(st.get("timesteps")) is not None
              and finite_or_none(st.get("test_acc")) is not None]
    if not curves and not points:
        return None
    fig = _figure(8, 4.8)
    ax = fig.add_subplot(111)
    color_of = _stage_colors(stages)
    all_t = []
    for st, pts in curves:
        ts, accs = zip(*pts)
        all_t += ts
        n = st.get("curve_samples")
        on = f" ({n} test images)" if isinstance(n, int) and n != st.get("test_samples") else ""
        ax.plot(ts, [100 * a for a in accs], "-o", ms=4, color=color_of[id(st)],
                label=f"{st.get('stage')} ({st.get('kind')}): acc vs T{on}")
    for st in points:
        t, a = int(st["timesteps"]), 100 * float(st["test_acc"])
        if st.get("kind") == "convert" and t in dict(_curve(st)) and st.get("curve_samples") == st.get("test_samples"):
            continue  # the convert stage's own T is already on its curve (measured on the same images)
        all_t.append(t)
        ax.plot([t], [a], marker="*", ms=14, ls="none", color=color_of[id(st)], markeredgecolor="black",
                label=f"{st.get('stage')} ({st.get('kind')}, T={t}): {a:.2f}%")
        ax.annotate(str(st.get("stage")), (t, a), textcoords="offset points", xytext=(6, 6), fontsize=8)
    for st in stages:
        if st.get("kind") == "ann" and finite_or_none(st.get("test_acc")) is not None:
            a = 100 * float(st["test_acc"])
            ax.axhline(a, ls="--", color="gray", lw=1.2, label=f"ANN {st.get('stage')}: {a:.2f}%")
    if all_t and max(all_t) / max(min(all_t), 1) >= 20:
        ax.set_xscale("log")
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs timesteps")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def plot_spike_rates(stages: list[dict]) -> bytes | None:
    """Grouped bars: spikes per neuron per inference, per neuron layer (x) and stage (colour)."""
    with_rates = [st for st in stages if _rates(st)]
    if not with_rates:
        return None
    layers: list[str] = []
    for st in with_rates:
        for name in _rates(st):
            if name not in layers:
                layers.append(name)
    n, k = len(layers), len(with_rates)
    fig = _figure(min(max(7.0, 0.45 * n * max(1, k) ** 0.5 + 2), 16), 4.8)
    ax = fig.add_subplot(111)
    width = 0.8 / k
    color_of = _stage_colors(stages)
    for j, st in enumerate(with_rates):
        color = color_of[id(st)]
        r = _rates(st)
        xs = [i - 0.4 + width * (j + 0.5) for i in range(n)]
        mean = _mean_rate(st)
        label = f"{st.get('stage')} ({st.get('kind')}, T={st.get('timesteps')})"
        if mean is not None:
            label += f", mean {mean:.3f}"
        ax.bar(xs, [r.get(name, 0.0) for name in layers], width=width, color=color, label=label)
    ax.set_xticks(range(n))
    ax.set_xticklabels(layers, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("spikes per neuron per inference")
    ax.set_title("Spike rate per layer")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_energy(stages: list[dict]) -> bytes | None:
    """Per layer: ANN energy and each stage's SNN compute energy (membrane term stacked, hatched); log scale, uJ."""
    with_energy = [st for st in stages if _energy(st)]
    if not with_energy:
        return None
    layers: list[str] = []
    ann: dict[str, float] = {}
    for st in with_energy:
        for rec in _energy(st)["layers"]:
            name = str(rec.get("name"))
            if name not in layers:
                layers.append(name)
            if name not in ann and finite_or_none(rec.get("e_ann")) is not None:
                ann[name] = float(rec["e_ann"])
    n, k = len(layers), len(with_energy) + 1
    fig = _figure(min(max(7.0, 0.5 * n * max(1, k) ** 0.5 + 2), 16), 5.0)
    ax = fig.add_subplot(111)
    width = 0.8 / k
    uj = 1e6
    xs0 = [i - 0.4 + width * 0.5 for i in range(n)]
    ax.bar(xs0, [ann.get(name, 0.0) * uj for name in layers], width=width, color="#555555", label="ANN (MACs)")
    positive = [v for v in ann.values() if v > 0]
    color_of = _stage_colors(stages)
    for j, st in enumerate(with_energy, start=1):
        color = color_of[id(st)]
        recs = {str(r.get("name")): r for r in _energy(st)["layers"]}
        comp = [(finite_or_none(recs.get(name, {}).get("e_snn")) or 0.0) * uj for name in layers]
        mem = [(finite_or_none(recs.get(name, {}).get("e_mem")) or 0.0) * uj for name in layers]
        xs = [i - 0.4 + width * (j + 0.5) for i in range(n)]
        ratio, _ = _ratios(st)
        label = f"SNN {st.get('stage')} (T={st.get('timesteps')})" + (f", ANN/SNN {ratio:.1f}x" if ratio else "")
        ax.bar(xs, comp, width=width, color=color, label=label)
        if any(m > 0 for m in mem):
            ax.bar(xs, mem, width=width, bottom=comp, color=color, alpha=0.35, hatch="//", edgecolor=color,
                   label=f"  + membrane read/write ({st.get('stage')})")
        positive += [v / uj for v in comp + mem if v > 0]
    if positive:
        ax.set_yscale("log")
        ax.set_ylim(bottom=min(positive) * uj / 3)
    ax.set_xticks(range(n))
    ax.set_xticklabels(layers, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("energy per inference (uJ)")
    ax.set_title("Energy per layer: ANN vs SNN")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# ---------------------------------------------------------------------------------------------------------------
# page


def _fmt_time(s) -> str:
    s = finite_or_none(s)
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {sec:02d}s"


def _fmt(v, spec: str, suffix: str = "") -> str:
    v = finite_or_none(v)
    return "-" if v is None else f"{v:{spec}}{suffix}"


def _joules(v) -> str:
    v = finite_or_none(v)
    if v is None:
        return "-"
    for div, suf in ((1.0, "J"), (1e-3, "mJ"), (1e-6, "&micro;J"), (1e-9, "nJ")):
        if abs(v) >= div:
            return f"{v / div:.3f} {suf}"
    return f"{v / 1e-12:.3f} pJ"


def _count(v) -> str:
    v = finite_or_none(v)
    if v is None:
        return "-"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f} {suf}"
    return f"{v:.0f}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _stage_rows(stages: list[dict]) -> list[list[str]]:
    rows = []
    for st in stages:
        r1, r2 = _ratios(st)
        ratio = "-" if r1 is None else f"{r1:.2f}&times;" + ("" if r2 is None else f" ({r2:.2f}&times; w/ mem.)")
        acc = _fmt(finite_or_none(st.get("test_acc")) * 100 if finite_or_none(st.get("test_acc")) is not None else None, ".2f", "%")
        rows.append([html.escape(str(st.get("stage", "?"))), html.escape(str(st.get("kind", "?"))), acc,
                     "-" if st.get("timesteps") is None else html.escape(str(st.get("timesteps"))),
                     _fmt(_mean_rate(st), ".4f"), ratio, html.escape(str(st.get("epochs", "-"))),
                     _fmt_time(st.get("seconds"))])
    return rows


def _energy_rows(stages: list[dict]) -> list[list[str]]:
    rows = []
    for st in stages:
        en = _energy(st)
        if not en:
            continue
        tot = en.get("totals") or {}
        r1, r2 = _ratios(st)
        rows.append([html.escape(str(st.get("stage"))), html.escape(str(en.get("timesteps", st.get("timesteps")))),
                     html.escape(str(en.get("encoding", st.get("encoding", "-")))),
                     html.escape(str(en.get("preset", "-"))), _count(tot.get("macs")), _count(tot.get("acs")),
                     _joules(tot.get("e_ann")), _joules(tot.get("e_snn")), _joules(tot.get("e_mem")),
                     _fmt(r1, ".2f", "&times;"), _fmt(r2, ".2f", "&times;")])
    return rows


CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1150px;color:#222;
     background:#fff;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child,td:nth-child(2){text-align:left}
figure{margin:12px 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.note{color:#555;font-size:13px}
"""


def _img(name: str, data: bytes, alt: str, caption: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{caption} (also <code>{html.escape(name)}</code>)</figcaption></figure>")


def render_html(run: dict, images: dict[str, bytes | None]) -> str:
    """The page for ``run`` (from :func:`load_run`) with the PNG ``images`` (file name -> bytes or None)."""
    stages = run["stages"]
    title = f"spikeforge run report: {run['recipe']}"
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>{len(stages)} stage(s); generated {now}</p>", "<h2>Stages</h2>"]
    if stages:
        parts.append(_table(["stage", "kind", "test acc", "T", "spike rate", "energy ANN/SNN", "epochs", "time"],
                            _stage_rows(stages)))
        parts.append("<p class='note'>Spike rate: mean spikes per neuron per inference (all T steps). Energy ratio: "
                     "ANN energy over SNN compute energy, in brackets with the membrane read/write term.</p>")
    else:
        parts.append("<p class='note'>No finished stage in this run yet.</p>")

    parts.append("<h2>Accuracy vs timesteps</h2>")
    if images.get(ACC_PNG):
        parts.append(_img(ACC_PNG, images[ACC_PNG], "accuracy vs timesteps",
                          "Lines: accuracy against T of one simulation (conversion sweeps, SNN eval_timesteps); "
                          "stars: trained SNN stages at their T; dashed: ANN accuracy"))
    else:
        parts.append("<p class='note'>No spiking stage in this run: nothing to plot against timesteps.</p>")

    parts.append("<h2>Spike rate per layer</h2>")
    if images.get(RATE_PNG):
        parts.append(_img(RATE_PNG, images[RATE_PNG], "spike rate per layer",
                          "Spikes per neuron per inference (over all T steps), per neuron layer and stage"))
    else:
        parts.append("<p class='note'>No stage recorded spike rates.</p>")

    parts.append("<h2>Energy per layer</h2>")
    if images.get(ENERGY_PNG):
        parts.append(_img(ENERGY_PNG, images[ENERGY_PNG], "energy per layer ANN vs SNN",
                          "Energy per inference per layer: ANN (MACs) against SNN compute (ACs; first layer MACs "
                          "under direct input), hatched: membrane read/write (2 &times; T &times; neurons &times; "
                          "E_mem, none at T=1); log scale"))
        parts.append(_table(["stage", "T", "encoding", "preset", "MACs", "ACs", "E ANN", "E SNN compute",
                             "E membrane", "ANN/SNN", "ANN/SNN w/ mem."], _energy_rows(stages)))
        parts.append("<p class='note'>Energies in joules per inference (Horowitz, ISSCC 2014, per-operation "
                     "energies).</p>")
    else:
        parts.append("<p class='note'>No stage recorded an energy estimate (metrics \"energy\"); run "
                     "<code>spikeforge energy STAGE_DIR</code> for one.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_run_report(out_dir: str | Path, summary: dict | None = None) -> list[Path]:
    """Write the plots (PNG) and ``report.html`` into ``out_dir``; returns the written paths (the page last).

    ``summary``: the run summary (default: read ``out_dir/summary.json``); stage metrics files fill in the rest.
    """
    out_dir = Path(out_dir)
    run = load_run(out_dir, summary)
    stages = run["stages"]
    images = {ACC_PNG: plot_accuracy(stages), RATE_PNG: plot_spike_rates(stages), ENERGY_PNG: plot_energy(stages)}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in images.items():
        if data:
            utils.atomic_write_bytes(out_dir / name, lambda f, data=data: f.write(data))
            written.append(out_dir / name)
    page = out_dir / REPORT_FILE
    utils.atomic_write_text(page, render_html(run, images))
    written.append(page)
    return written


def write_run_plots(out_dir: str | Path, summary: dict | None = None) -> list[Path]:
    """What ``spikeforge run`` calls after a run: the PNG plots and ``report.html`` (see :func:`write_run_report`)."""
    return write_run_report(out_dir, summary)


__all__ = ["load_run", "plot_accuracy", "plot_energy", "plot_spike_rates", "render_html", "write_run_plots",
           "write_run_report"]
