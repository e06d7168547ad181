"""Draw docs/results/mnist-saccade/samples.png: four simulated mnist-saccade recordings (test digits 0-3) as the
source digit, the event stream (pixel column against time, ON green / OFF red) and the T = 10 binned frames at full
sensor resolution. Run from the repository root: python docs/results/mnist-saccade/make_figures.py"""

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spikeforge.data import SaccadeOptions, bin_events, resolve_data_dir
from spikeforge.data.events.saccade import SENSOR, simulate_saccades
from spikeforge.data.idx import idx_files, read_idx

OUT = Path(__file__).resolve().parent / "samples.png"
T = 10


def main() -> None:
    files = idx_files("mnist", resolve_data_dir(), False, False)
    images, labels = read_idx(files[0]), read_idx(files[1])
    pick = [int(np.flatnonzero(labels == d)[0]) for d in range(4)]
    opts = SaccadeOptions(noise_hz=1.0)  # the recipe's sensor
    ev = simulate_saccades(images[pick], opts)
    frames = bin_events(ev, T, SENSOR)
    fig = Figure(figsize=(2 + 1.1 * T + 3.2, 1.25 * len(pick) + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(pick), T + 2, width_ratios=[1.1, 3] + [1] * T, wspace=0.08, hspace=0.35)
    for r, i in enumerate(pick):
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(images[i], cmap="gray")
        ax.set_axis_off()
        ax.set_title(f"digit {labels[i]}", fontsize=8)
        s = ev.sample(r)
        ax = fig.add_subplot(grid[r, 1])
        on = s["p"] == 1
        ax.scatter(s["t"][on] / 1000, s["x"][on], s=1.0, c="tab:green", lw=0, alpha=0.6)
        ax.scatter(s["t"][~on] / 1000, s["x"][~on], s=1.0, c="tab:red", lw=0, alpha=0.6)
        ax.set_ylim(34, 0)
        ax.set_xlim(0, 300)
        ax.set_xticks([0, 100, 200, 300])
        ax.tick_params(labelsize=6)
        ax.set_ylabel("column", fontsize=7)
        if r == len(pick) - 1:
            ax.set_xlabel("time (ms): three saccades", fontsize=7)
        ax.set_title(f"{len(s['t'])} events", fontsize=8, pad=2)
        vmax = max(1, int(frames[r].max()))
        for t in range(T):
            rgb = np.zeros((34, 34, 3))
            rgb[..., 0] = frames[r, t, 0] / vmax
            rgb[..., 1] = frames[r, t, 1] / vmax
            ax = fig.add_subplot(grid[r, t + 2])
            ax.imshow(np.clip(rgb * 2, 0, 1), interpolation="nearest")
            ax.set_axis_off()
            if r == 0:
                ax.set_title(f"frame {t + 1}", fontsize=7)
    fig.suptitle("mnist-saccade (simulated): source digit, events (ON green, OFF red), T = 10 binned frames",
                 fontsize=9)
    fig.savefig(OUT, bbox_inches="tight")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
