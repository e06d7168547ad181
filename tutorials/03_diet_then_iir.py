# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # DIET-SNN, then IIR-SNN down to one timestep
#
# The chain of the quickstart recipe, in Python:
#
# 1. train an ANN;
# 2. convert it at a low `T` (threshold balancing at a high percentile, then a scaling factor < 1);
# 3. **DIET-SNN** (Rathi & Roy 2020): train weights, thresholds and leaks with BPTT at `T = 5`, direct input;
# 4. **IIR-SNN** (Chowdhury, Rathi & Roy 2021, "One timestep is all you need"): lower `T` one step at a time, each
#    stage starting from the previous one's weights, thresholds and leaks, down to `T = 1`.
#
# The recipe `recipes/mnist-quickstart.yaml` runs the same chain with `spikeforge run`. Here every stage is a few
# lines of plain PyTorch. `SPIKEFORGE_TUTORIAL_FAST=1` trains each stage for a few dozen batches.

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
data = sf.build_data(sf.DataConfig(dataset="mnist", batch_size=64, test_batch_size=500,
                                   train_subset=6000 if FAST else None, test_subset=1000 if FAST else None))
BATCHES = 40 if FAST else None  # batches per SNN stage (None: one epoch)


def train(model, opt, batches=None):
    model.train()
    for i, (x, y) in enumerate(data.train):
        if batches is not None and i == batches:
            break
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def accuracy(model):
    model.eval()
    correct = total = 0
    for x, y in data.test:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


# %% [markdown]
# ## 1. The ANN

# %%
ann = sf.create_model("vgg4", dataset="mnist", width=0.25)
train(ann, torch.optim.Adam(ann.parameters(), lr=2e-3))
results = {"ANN": accuracy(ann)}
print(f"ANN: {results['ANN']:.4f}")

# %% [markdown]
# ## 2. Conversion at T = 5
#
# At `T = 5` a converted network with max-balanced thresholds barely spikes; DIET-SNN balances at the 99.7th
# percentile and scales the thresholds down. The spiking twin is built with learnable thresholds and leaks.

# %%
snn = sf.ann_to_snn(ann, sf.SNNConfig(timesteps=5, learn_threshold=True, learn_leak=True))
sf.balance_thresholds(snn, data.calibration_batch(256), timesteps=50, percentile=99.7, scaling=0.7, progress=False)
results["converted, T=5"] = accuracy(snn)
print(f"converted, T=5: {results['converted, T=5']:.4f}")

# %% [markdown]
# ## 3. DIET-SNN at T = 5
#
# Each neuron of layer `l` integrates `P[t] = lambda_l * U[t-1] + W_l s_(l-1)[t]`, fires `s_l[t] = 1` when
# `P[t] >= V_th,l` and subtracts the threshold, `U[t] = P[t] - V_th,l * s_l[t]`. The leak `lambda_l` and the
# threshold `V_th,l` are trained with the weights through the surrogate gradient (Rathi & Roy 2020). Their
# learning rate is larger than the weights' (`param_groups`); they stay in range by themselves.

# %%
opt = torch.optim.Adam(sf.param_groups(snn, 1e-3, threshold_lr=1e-2, leak_lr=1e-2))
train(snn, opt, BATCHES)
results["DIET, T=5"] = accuracy(snn)
print(f"DIET, T=5: {results['DIET, T=5']:.4f}; thresholds {[round(t, 3) for t in snn.thresholds()]}, "
      f"leaks {[round(v, 3) for v in snn.leaks()]}")

# %% [markdown]
# ## 4. IIR-SNN: one timestep at a time
#
# `snn.timesteps = T` changes the simulation length in place (the model is `T`'s only home). Each stage fine-tunes
# the previous one; going down step by step matters (jumping from 5 to 1 loses more).

# %%
for steps in (4, 3, 2, 1):
    snn.timesteps = steps
    before = accuracy(snn)
    opt = torch.optim.Adam(sf.param_groups(snn, 3e-4, threshold_lr=1e-2, leak_lr=1e-2))
    train(snn, opt, BATCHES)
    results[f"IIR, T={steps}"] = accuracy(snn)
    print(f"T={steps}: {before:.4f} before fine-tuning, {results[f'IIR, T={steps}']:.4f} after")

# %%
for name, acc in results.items():
    print(f"{name:16s} {100 * acc:6.2f}%")

from matplotlib.figure import Figure  # noqa: E402

fig = Figure(figsize=(6, 3.2), layout="constrained")
ax = fig.add_subplot()
ax.bar(range(len(results)), [100 * a for a in results.values()], color="tab:blue")
ax.set_xticks(range(len(results)), list(results), rotation=30, ha="right")
ax.set_ylim(min(80.0, 100 * min(results.values()) - 2), 100)
ax.set_ylabel("test accuracy (%)")
fig.savefig(OUT / "diet_iir.png")
