"""Training-step time of spikeforge SNNs against their ANN twin (forward + backward + SGD step).

    python benchmarks/step_time.py [--net issue9|quickstart] [--timesteps 1 5 25] [--repeats 20]

Runs are interleaved in one process (ANN, SNN T=1, SNN T=5, ... repeated), and the median is reported together with
the ratio to ``T x`` the ANN step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from spikeforge.models import create_model, register_model
from spikeforge.models.vgg import VGG


def issue9_net(spec, snn=None):
    """conv64-pool-conv128-pool-conv256-pool-fc10, bias-free (the net of issue 9)."""
    return VGG(spec, snn, cfg=[64, "A", 128, "A", 256, "A"])


def build(net: str, spiking: bool, timesteps: int):
    if net == "issue9":
        register_model("bench9", issue9_net)
        from spikeforge.models import vgg as _vgg
        _vgg.CFGS.setdefault("bench9", ([64, "A", 128, "A", 256, "A"], []))
        kw = dict(num_classes=10, in_channels=3, input_size=32, hidden=[], dropout=0.0)
        name = "bench9"
    else:
        kw = dict(num_classes=10, in_channels=1, input_size=28, width=0.5, hidden=[1024], dropout=0.2)
        name = "vgg4"
    if spiking:
        return create_model(name, spiking=True, timesteps=timesteps, leak=0.9, threshold=1.0, **kw)
    return create_model(name, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", default="issue9", choices=["issue9", "quickstart"])
    ap.add_argument("--timesteps", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (args.batch, 3, 32, 32) if args.net == "issue9" else (args.batch, 1, 28, 28)
    x = torch.rand(shape)
    y = torch.randint(0, 10, (args.batch,))
    models = {"ann": build(args.net, False, 1)}
    for t in args.timesteps:
        models[f"snn T={t}"] = build(args.net, True, t)
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in models.items()}
    times = {k: [] for k in models}

    def step(k):
        m, o = models[k], opts[k]
        o.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(m(x), y).backward()
        o.step()

    for k in models:  # warm-up
        for _ in range(2):
            step(k)
    for _ in range(args.repeats):
        for k in models:
            t0 = time.perf_counter()
            step(k)
            times[k].append(time.perf_counter() - t0)
    ann = statistics.median(times["ann"])
    print(f"net={args.net} batch={args.batch} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'model':10s} {'median ms':>10s} {'ratio to T x ANN':>18s}")
    for k, v in times.items():
        med = statistics.median(v)
        t = 1 if k == "ann" else int(k.split("=")[1])
        print(f"{k:10s} {1000 * med:10.1f} {med / (t * ann):18.3f}")


if __name__ == "__main__":
    main()
