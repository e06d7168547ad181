# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Your own training loop
#
# A spiking VGG for MNIST built with `create_model`, trained by an ordinary PyTorch loop, recorded spike by spike and
# evaluated at several numbers of timesteps `T`. At the end, spikeforge neurons inside a module of your own.
#
# Run it as a script (`python tutorials/01_your_own_training_loop.py`) or open it as a notebook
# (`jupytext --to notebook tutorials/01_your_own_training_loop.py`). With `SPIKEFORGE_TUTORIAL_FAST=1` it trains on a
# small slice (the test suite runs every tutorial that way). Figures go to `$SPIKEFORGE_TUTORIAL_OUT`
# (default `tutorial-output/`).

# %%
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import spikeforge as sf

FAST = os.environ.get("SPIKEFORGE_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("SPIKEFORGE_TUTORIAL_OUT", "tutorial-output"))
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)

# %% [markdown]
# ## Data
#
# `build_data` takes a `DataConfig` (the `data` section of a recipe) and returns train and test loaders that yield
# images as float tensors in `[0, 1]` with integer labels. MNIST is read from `$SPIKEFORGE_DATA` (or downloaded,
# checksums verified). `train_subset`/`test_subset` keep the first N images.

# %%
data = sf.build_data(sf.DataConfig(dataset="mnist", batch_size=64, test_batch_size=500,
                                   train_subset=6000 if FAST else None, test_subset=1000 if FAST else None))
images, labels = next(iter(data.test))
print(f"{data.info.name}: {len(data.train)} training batches; a batch is {tuple(images.shape)}, "
      f"values in [{images.min():.0f}, {images.max():.0f}]")

# %% [markdown]
# ## The model
#
# `create_model(arch, dataset=...)` takes the input channels, image size, number of classes and the input
# normalisation (per-channel mean and standard deviation) from the dataset. The normalisation matters more for an SNN
# than for an ANN: with raw `[0, 1]` pixels the first layer's currents rarely reach the threshold, no layer spikes
# and nothing learns.
#
# `spiking=True` builds the spiking twin; the `SNNConfig` options are keywords. Here: `T = 4` timesteps, direct
# input (the image is the input current at every step), and thresholds and leaks that learn with the weights
# (DIET-SNN, Rathi & Roy 2020).

# %%
snn = sf.create_model("vgg4", dataset="mnist", width=0.25, spiking=True, timesteps=4,
                      learn_threshold=True, learn_leak=True)
print("normalisation:", snn.spec.mean, snn.spec.std, "| T =", snn.timesteps)
print(snn.features)

# %% [markdown]
# ## Training: a plain loop
#
# The model is a plain `nn.Module`: images in, logits out. Backpropagation runs through all `T` steps (BPTT with a
# surrogate gradient for the spike). `param_groups` gives thresholds and leaks their own learning rate. Thresholds
# stay positive and leaks in `[0, 1]` by themselves: after every optimizer step they are clamped back, so the loop
# needs no extra call.
#
# `DeadLayerWatch` warns (once per layer, with the usual fixes) if a spiking layer stays silent over a window of
# batches. Deep layers often start silent and wake up within a few dozen batches, hence a generous window.

# %%
opt = torch.optim.Adam(sf.param_groups(snn, 2e-3, threshold_lr=5e-3, leak_lr=5e-3))
with sf.DeadLayerWatch(snn, window=100):
    snn.train()
    for i, (x, y) in enumerate(data.train):
        loss = F.cross_entropy(snn(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 25 == 0:
            print(f"batch {i:4d}  loss {loss.item():.3f}")
print("thresholds:", [round(t, 3) for t in snn.thresholds()])
print("leaks:     ", [round(v, 3) for v in snn.leaks()])

# %% [markdown]
# ## Evaluating at T = 4, T = 1 and everything in between
#
# `T` has one home: `model.timesteps`. Set it, or evaluate temporarily at another `T` with `model.at_timesteps(T)`.
# `forward_cumulative` returns the logits at several `T` from one simulation.


# %%
@torch.no_grad()
def accuracy(model, loader):
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


print(f"T=4: {accuracy(snn, data.test):.4f}")
with snn.at_timesteps(1):
    print(f"T=1: {accuracy(snn, data.test):.4f}")
print("back at T =", snn.timesteps)

steps = [1, 2, 4, 8]
correct, total = dict.fromkeys(steps, 0), 0
with torch.no_grad():
    for x, y in data.test:
        for t, logits in zip(steps, snn.forward_cumulative(x, steps)):
            correct[t] += int((logits.argmax(1) == y).sum())
        total += len(y)
print("accuracy at T:", {t: round(c / total, 4) for t, c in correct.items()})

# %% [markdown]
# ## Recording spikes and membranes
#
# `SpikeRecorder` keeps, per layer and per timestep, the spikes (`bool`) and optionally the membrane potentials
# (`float16`) of the chosen samples, offloaded to the CPU and within a byte budget (`max_bytes`). Plots: a spike
# raster, the firing rate per layer and step, and the distribution of per-neuron rates.

# %%
with sf.SpikeRecorder(snn, samples=4, membrane=True) as rec, torch.no_grad():
    snn.eval()(images)
for name, s in rec.spikes.items():
    print(f"{name:14s} spikes {tuple(s.shape)} {s.dtype}, membrane {rec.membrane[name].dtype}, "
          f"rate per step {[round(r, 3) for r in rec.rates()[name].tolist()]}")

ax = sf.plot_raster(rec.spikes["classifier.2"], sample=0)
ax.figure.savefig(OUT / "raster.png")
ax = sf.plot_rate_heatmap(rec)
ax.figure.savefig(OUT / "rates.png")
ax = sf.plot_rate_histogram(rec)
ax.figure.savefig(OUT / "rate_histogram.png")

# %% [markdown]
# ## spikeforge neurons in a module of your own
#
# `SpikingNeuron` is an `nn.Module` on time-first tensors `[T, B, ...]`, called as `neuron(x, steps=T)`; a one-step
# input `[1, B, ...]` is repeated over the `T` steps (direct input). Everything else is plain PyTorch.
# `param_groups` also registers the module's neurons, so their thresholds and leaks stay in range.


# %%
class TinySNN(nn.Module):
    def __init__(self, steps: int = 4):
        super().__init__()
        self.steps = steps
        self.fc1 = nn.Linear(28 * 28, 128)
        self.lif = sf.SpikingNeuron(threshold=1.0, leak=0.9, learn_threshold=True, learn_leak=True)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, images):                               # [B, 1, 28, 28] in [0, 1]
        current = self.fc1(images.flatten(1)).unsqueeze(0)   # [1, B, 128]: the same current at every step
        spikes = self.lif(current, steps=self.steps)         # [T, B, 128]
        return self.fc2(spikes).sum(0)                       # readout: summed over time


tiny = TinySNN()
opt = torch.optim.Adam(sf.param_groups(tiny, 1e-3, threshold_lr=1e-2))
tiny.train()
for i, (x, y) in enumerate(data.train):
    loss = F.cross_entropy(tiny(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if FAST and i == 40:
        break
print(f"TinySNN: {accuracy(tiny, data.test):.4f}; threshold {tiny.lif.threshold.item():.3f}, "
      f"leak {tiny.lif.leak.item():.3f}")
