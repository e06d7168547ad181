# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Convert a plain PyTorch CNN and plot accuracy against T
#
# A CNN written and trained in plain PyTorch becomes a spiking network by rate conversion: its weights go into the
# ANN twin of a spikeforge architecture with the same layers, `ann_to_snn` builds the spiking twin (ReLU -> IF
# neuron, BatchNorm folded), and `balance_thresholds` sets each layer's threshold from the input currents it sees on
# calibration images (Sengupta et al. 2019, layer-wise threshold balancing). The SNN's accuracy then climbs towards
# the ANN's as the number of timesteps `T` grows.
#
# `SPIKEFORGE_TUTORIAL_FAST=1` trains on a slice and simulates fewer steps.

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
data = sf.build_data(sf.DataConfig(dataset="mnist", batch_size=64, test_batch_size=500,
                                   train_subset=10000 if FAST else None, test_subset=1000 if FAST else None))

# %% [markdown]
# ## A CNN in plain PyTorch
#
# What conversion needs: ReLU activations (as modules, not `F.relu` calls), average pooling instead of max pooling,
# and no biases (or BatchNorm, which is folded away). This one has the layers of spikeforge's `vgg4` at a quarter of
# the width. It expects normalised images, so we normalise with the dataset's mean and std.

# %%
cnn = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
    nn.Flatten(), nn.Linear(32 * 7 * 7, 256, bias=False), nn.ReLU(), nn.Dropout(0.2),
    nn.Linear(256, 10, bias=False),
)
stats = sf.model_defaults("mnist")
mean, std = stats["mean"][0], stats["std"][0]

opt = torch.optim.Adam(cnn.parameters(), lr=2e-3)
cnn.train()
for x, y in data.train:
    loss = F.cross_entropy(cnn((x - mean) / std), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


@torch.no_grad()
def accuracy(model, loader, prepare=lambda x: x):
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(prepare(x)).argmax(1) == y).sum())
        total += len(y)
    return correct / total


cnn_acc = accuracy(cnn, data.test, lambda x: (x - mean) / std)
print(f"plain CNN: {cnn_acc:.4f}")

# %% [markdown]
# ## Into the ANN twin
#
# The twin takes images in `[0, 1]` and normalises them itself. Its parameters come in the same order with the same
# shapes as the CNN's, so they copy one by one; the outputs then agree.

# %%
ann = sf.create_model("vgg4", dataset="mnist", width=0.25)
with torch.no_grad():
    for theirs, ours in zip(cnn.parameters(), ann.parameters(), strict=True):
        ours.copy_(theirs)
ann.eval()
x, _ = next(iter(data.test))
assert torch.allclose(ann(x), cnn((x - mean) / std), atol=1e-4)

# %% [markdown]
# ## Conversion and threshold balancing
#
# `ann_to_snn` checks that the network can be converted (it refuses max pooling and other activations) and copies
# the weights into the spiking twin. `balance_thresholds` simulates the SNN on calibration images layer by layer and
# sets each threshold to the largest (here: the 99.9th percentile of the) input current the layer receives; the
# percentile rule is Rueckauer et al. 2017's. Integrate-and-fire neurons (leak 1) with soft reset make the spike
# rate approximate the ReLU's output.

# %%
max_t = 32 if FAST else 128
snn = sf.ann_to_snn(ann, sf.SNNConfig(timesteps=max_t), example=x[:2])
thresholds = sf.balance_thresholds(snn, data.calibration_batch(256), timesteps=max_t, percentile=99.9,
                                   progress=False)
print("balanced thresholds:", [round(t, 3) for t in thresholds])

# %% [markdown]
# ## Accuracy against T
#
# `forward_cumulative` simulates once up to the largest `T` and returns the logits at each requested `T`.

# %%
steps = [t for t in (1, 2, 4, 8, 16, 32, 64, 128) if t <= max_t]
correct, total = dict.fromkeys(steps, 0), 0
with torch.no_grad():
    for x, y in data.test:
        for t, logits in zip(steps, snn.forward_cumulative(x, steps)):
            correct[t] += int((logits.argmax(1) == y).sum())
        total += len(y)
curve = {t: correct[t] / total for t in steps}
print({t: round(a, 4) for t, a in curve.items()})

from matplotlib.figure import Figure  # noqa: E402

fig = Figure(figsize=(5, 3.2), layout="constrained")
ax = fig.add_subplot()
ax.semilogx(steps, [100 * curve[t] for t in steps], "o-", base=2, label="converted SNN")
ax.axhline(100 * cnn_acc, color="gray", ls="--", label="plain CNN")
ax.set_xlabel("timesteps T")
ax.set_ylabel("test accuracy (%)")
ax.legend()
fig.savefig(OUT / "accuracy_vs_T.png")
