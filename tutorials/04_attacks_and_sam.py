# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Adversarial attacks through time, and Spike Activation Maps
#
# An SNN is attacked white-box like an ANN: the gradient of the loss with respect to the input image is
# backpropagated through all `T` steps with the surrogate gradient (BPTT; Sharmin et al. 2020 study how robust
# SNNs are to such attacks). `FGSM` (Goodfellow et al. 2015) takes one signed step of size `eps`; `PGD` (Madry et
# al. 2018) takes several and projects back onto the `eps` ball. Then **SAM**, the Spike Activation Map of Kim & Panda
# 2021: a label-free, forward-only heat map per timestep that weighs each spike by how recently the same neuron fired
# before (short inter-spike intervals count more).
#
# `SPIKEFORGE_TUTORIAL_FAST=1` trains briefly and attacks a few hundred images.

# %%
import os
from pathlib import Path

import torch
import torch.nn.functional as F

import spikeforge as sf

FAST = os.environ.get("SPIKEFORGE_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("SPIKEFORGE_TUTORIAL_OUT", "tutorial-output"))
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
data = sf.build_data(sf.DataConfig(dataset="mnist", batch_size=64, test_batch_size=128 if FAST else 500,
                                   train_subset=5000 if FAST else None, test_subset=256 if FAST else 2000))

# %% [markdown]
# ## A spiking network to attack
#
# A DIET-style SNN trained from scratch at `T = 4` (see the first tutorial).

# %%
snn = sf.create_model("vgg4", dataset="mnist", width=0.25, spiking=True, timesteps=4,
                      learn_threshold=True, learn_leak=True)
opt = torch.optim.Adam(sf.param_groups(snn, 2e-3, threshold_lr=5e-3, leak_lr=5e-3))
snn.train()
for x, y in data.train:
    loss = F.cross_entropy(snn(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
snn.eval()

# %% [markdown]
# ## Accuracy under attack
#
# `attack(images, labels)` returns adversarial images in `[0, 1]`; it runs the model in eval mode and leaves the
# caller's random state alone. Both attacks here are crafted on the SNN itself (white-box).


# %%
def accuracy(model, attack=None):
    correct = total = 0
    for x, y in data.test:
        if attack is not None:
            x = attack(x, y)
        with torch.no_grad():
            correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


rows = [("clean", 0.0, accuracy(snn))]
for eps in (0.05, 0.1, 0.2):
    rows.append(("FGSM", eps, accuracy(snn, sf.FGSM(snn, eps=eps))))
    rows.append(("PGD", eps, accuracy(snn, sf.PGD(snn, eps=eps, alpha=eps / 4, steps=5 if FAST else 10))))
for name, eps, acc in rows:
    print(f"{name:5s} eps={eps:<5} accuracy {100 * acc:6.2f}%")

# %% [markdown]
# ## Spike Activation Maps
#
# `SAM(model, target_layers=[...])` records the target layer's spikes in one forward pass and returns the maps
# `[T, B, H, W]`, normalised and upsampled to the image; `sam.summed` is the map summed over time. Below: the clean
# image and its adversarial version (FGSM, eps 0.1), with the SAM of the second convolutional layer at each step.

# %%
images, labels = next(iter(data.test))
images, labels = images[:3], labels[:3]
adv = sf.FGSM(snn, eps=0.1)(images, labels)
with sf.SAM(snn, target_layers=["features.4"], gamma=0.5) as sam:
    clean_maps = sam(images)
    adv_maps = sam(adv)
print("SAM maps:", tuple(clean_maps.shape))

from matplotlib.figure import Figure  # noqa: E402

steps = clean_maps.shape[0]
fig = Figure(figsize=(1.6 * (steps + 1), 3.4 * len(images)), layout="constrained")
axes = fig.subplots(2 * len(images), steps + 1, squeeze=False)
for i in range(len(images)):
    for row, (x, maps, tag) in enumerate(((images, clean_maps, "clean"), (adv, adv_maps, "FGSM"))):
        r = 2 * i + row
        axes[r, 0].imshow(x[i, 0], cmap="gray")
        axes[r, 0].set_title(f"{tag}, label {int(labels[i])}", fontsize=8)
        for t in range(steps):
            axes[r, t + 1].imshow(x[i, 0], cmap="gray")
            axes[r, t + 1].imshow(maps[t, i], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes[r, t + 1].set_title(f"t={t}", fontsize=8)
for ax in axes.flat:
    ax.set_axis_off()
fig.savefig(OUT / "sam.png", dpi=80)
