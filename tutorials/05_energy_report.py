# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The energy report
#
# An ANN layer does one multiply-accumulate (MAC) per weight and output; an SNN layer fed by spikes does one
# accumulate (AC) per weight and *input spike*, at every timestep. So the SNN's compute energy per inference is
#
#     E_SNN = sum_l  rate_l * T * MACs_l * E_AC      (first layer with direct input: MACs_1 * E_MAC, computed once)
#     E_ANN = sum_l  MACs_l * E_MAC
#
# with `rate_l` the spikes per neuron per step entering layer `l` and `E_MAC`, `E_AC` the energies of one operation
# (Horowitz, ISSCC 2014, 45 nm: fp32 MAC 4.6 pJ, AC 0.9 pJ), as in the comparisons of DIET-SNN (Rathi & Roy 2020) and
# BNTT (Kim & Panda 2021). The membrane reads and writes of every neuron at every step are an extra memory term.
#
# `energy_report` measures the spike rates on real images and returns every count per layer.

# %%
import os

import torch
import torch.nn.functional as F

import spikeforge as sf
from spikeforge.analysis.energy import PRESETS, energy_table

FAST = os.environ.get("SPIKEFORGE_TUTORIAL_FAST") == "1"
torch.manual_seed(0)
data = sf.build_data(sf.DataConfig(dataset="mnist", batch_size=64, test_batch_size=250,
                                   train_subset=5000 if FAST else None, test_subset=500 if FAST else 2000))

# %% [markdown]
# ## Two SNNs of the same architecture: T = 4 and T = 1
#
# Trained briefly from scratch (first tutorial); the `T = 1` model is the `T = 4` one after a short fine-tuning at one
# step (third tutorial).


# %%
def train(model, lr, batches=None):
    opt = torch.optim.Adam(sf.param_groups(model, lr, threshold_lr=5e-3, leak_lr=5e-3))
    model.train()
    for i, (x, y) in enumerate(data.train):
        if batches is not None and i == batches:
            break
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


snn = train(sf.create_model("vgg4", dataset="mnist", width=0.25, spiking=True, timesteps=4,
                            learn_threshold=True, learn_leak=True), 2e-3)
reports = {4: sf.energy_report(snn, data.test)}
snn.timesteps = 1
reports[1] = sf.energy_report(train(snn, 5e-4, batches=40 if FAST else 200), data.test)

# %% [markdown]
# ## The report
#
# `energy_table` prints it per layer: MACs of the ANN twin, the input spike rate, the SNN's ACs, and the energies.
# The totals and ratios are in `report["totals"]`, `report["energy_ratio"]` (`E_ANN / E_SNN`, compute only) and
# `report["energy_ratio_with_memory"]`.

# %%
print(energy_table(reports[4]))
for steps, rep in reports.items():
    print(f"T={steps}: mean spike rate {rep['spike_rate']['mean']:.3f}, E_ANN/E_SNN = {rep['energy_ratio']:.2f} "
          f"(compute), {rep['energy_ratio_with_memory']:.2f} with membrane traffic")

# %% [markdown]
# ## Other technologies
#
# The ratio depends on the relative cost of a MAC and an AC in the number format used: the presets are Horowitz's
# 45 nm figures for several formats (or give your own as `custom:MAC_PJ,AC_PJ`).

# %%
for preset in PRESETS:
    rep = sf.energy_report(snn, data.test, preset=preset, max_batches=1)
    print(f"{preset:11s} T=1: E_ANN/E_SNN = {rep['energy_ratio']:.2f}")
