"""Training-step time of spikeforge SNNs against their ANN twin (forward + backward + SGD step).

    python benchmarks/step_time.py [--net issue9|quickstart] [--timesteps 1 5 25] [--repeats 20] [--checkpoint-chunk 5]

Runs are interleaved in one process (ANN, SNN T=1, SNN T=5, ... repeated), and the median is reported together with
the ratio to ``T x`` the ANN step and the bytes saved for backward by one forward (saved-tensors hook; with
activation checkpointing these are the checkpoints' chunk inputs and what runs outside them). ``--checkpoint-chunk
N`` adds, for every ``T > N``, the SNN trained with ``snn.checkpoint_chunk = N`` (activation checkpointing over time
chunks of ``N`` steps).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from spikeforge.models import SNNConfig, create_model, register_model
from spikeforge.models.vgg import VGG


def issue9_net(spec, snn=None):
    """conv64-pool-conv128-pool-conv256-pool-fc10, bias-free (the net of issue 9)."""
    return VGG(spec, snn, cfg=[64, "A", 128, "A", 256, "A"])


def build(net: str, spiking: bool, timesteps: int, **overrides):
    """The ANN or SNN of ``net`` (``issue9``, ``quickstart`` or ``vgg16``). ``overrides`` replace the default spec/SNN
    keywords (e.g. ``leak``, ``threshold``, ``surrogate``, ``dropout``); used by ``benchmarks/peers.py``."""
    if net == "issue9":
        register_model("bench9", issue9_net)
        from spikeforge.models import vgg as _vgg
        _vgg.CFGS.setdefault("bench9", ([64, "A", 128, "A", 256, "A"], []))
        kw = dict(num_classes=10, in_channels=3, input_size=32, hidden=[], dropout=0.0)
        name = "bench9"
    elif net == "vgg16":
        kw = dict(num_classes=10, in_channels=3, input_size=32, dropout=0.0)
        name = "vgg16"
    else:
        kw = dict(num_classes=10, in_channels=1, input_size=28, width=0.5, hidden=[1024], dropout=0.2)
        name = "vgg4"
    snn_kw = dict(leak=0.9, threshold=1.0)
    for k, v in overrides.items():
        (snn_kw if k in SNNConfig.__dataclass_fields__ else kw)[k] = v
    if spiking:
        return create_model(name, spiking=True, timesteps=timesteps, **snn_kw, **kw)
    return create_model(name, **kw)


def input_shape(net: str, batch: int) -> tuple[int, ...]:
    return (batch, 1, 28, 28) if net == "quickstart" else (batch, 3, 32, 32)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One training step: forward, cross-entropy, backward, SGD step."""
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors one training forward saves for backward (outside checkpointed regions)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    return total


def time_interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Call every ``fns[k]()`` ``warmup`` times, then round-robin ``repeats`` times; seconds per call for each key."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", default="issue9", choices=["issue9", "quickstart"])
    ap.add_argument("--timesteps", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--checkpoint-chunk", type=int, default=None, metavar="N",
                    help="also time the SNNs with activation checkpointing over chunks of N timesteps")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.rand(input_shape(args.net, args.batch))
    y = torch.randint(0, 10, (args.batch,))
    models = {"ann": build(args.net, False, 1)}
    steps = {"ann": 1}
    for t in args.timesteps:
        models[f"snn T={t}"] = build(args.net, True, t)
        steps[f"snn T={t}"] = t
        ck = args.checkpoint_chunk
        if ck is not None and ck < t:
            models[f"snn T={t} ck={ck}"] = build(args.net, True, t, checkpoint_chunk=ck)
            steps[f"snn T={t} ck={ck}"] = t
    saved = {k: saved_bytes(m, x) for k, m in models.items()}
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in models.items()}
    times = time_interleaved({k: (lambda k=k: train_step(models[k], opts[k], x, y)) for k in models}, args.repeats)
    ann = statistics.median(times["ann"])
    print(f"net={args.net} batch={args.batch} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'model':16s} {'median ms':>10s} {'ratio to T x ANN':>18s} {'saved MB':>10s}")
    for k, v in times.items():
        med = statistics.median(v)
        print(f"{k:16s} {1000 * med:10.1f} {med / (steps[k] * ann):18.3f} {saved[k] / 2**20:10.2f}")


if __name__ == "__main__":
    main()
