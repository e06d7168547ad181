# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Export to NIR and ONNX, and run the result elsewhere
#
# [NIR](https://neuroir.org), the Neuromorphic Intermediate Representation (Pedersen et al. 2024), describes an SNN as
# a graph of continuous-time nodes (`Conv2d`, `Affine`, `LIF`, `IF`, ...) that simulators and neuromorphic chips
# read. spikeforge writes its SNNs as NIR graphs (exactly, for hard reset and integrate-then-fire; see
# `docs/export.md` for the mapping), reads them back, and other tools such as snnTorch run them. ONNX covers ANN
# twins and one-timestep SNNs, run by onnxruntime.
#
# Needs the optional packages: `pip install "spikeforge[export]" snntorch`.

# %%
import os
from pathlib import Path

import torch
import torch.nn.functional as F

import spikeforge as sf
from spikeforge.export import check_onnx, from_nir, onnx_session, read_nir

FAST = os.environ.get("SPIKEFORGE_TUTORIAL_FAST") == "1"
OUT = Path(os.environ.get("SPIKEFORGE_TUTORIAL_OUT", "tutorial-output"))
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
data = sf.build_data(sf.DataConfig(dataset="mnist", batch_size=64, test_batch_size=100,
                                   train_subset=4000 if FAST else None, test_subset=500))

# %% [markdown]
# ## A model NIR can express exactly
#
# NIR's IF and LIF neurons reset to zero after a spike: spikeforge's **hard** reset. (The default soft reset,
# subtracting the threshold, is exact only at `T = 1`.)

# %%
snn = sf.create_model("vgg4", dataset="mnist", width=0.25, spiking=True, timesteps=4, reset="hard",
                      learn_threshold=True, learn_leak=True)
opt = torch.optim.Adam(sf.param_groups(snn, 2e-3, threshold_lr=5e-3, leak_lr=5e-3))
snn.train()
for x, y in data.train:
    loss = F.cross_entropy(snn(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
snn.eval()
images, labels = next(iter(data.test))
with torch.no_grad():
    logits = snn(images)
print(f"accuracy on {len(labels)} test images: {float((logits.argmax(1) == labels).float().mean()):.3f}")

# %% [markdown]
# ## NIR: write, read back, compare
#
# `write_nir` writes the graph (HDF5) and a model card beside it (`model.nir.card.md`/`.json`: what the model is,
# its input, `T`, exactness). `from_nir` rebuilds a spikeforge model from the graph: the same spikes and logits.

# %%
path = sf.write_nir(snn, OUT / "model.nir")
twin = from_nir(read_nir(path)).eval()
with torch.no_grad():
    print("spikeforge -> NIR -> spikeforge, identical logits:", torch.equal(twin(images), logits))
print((OUT / "model.nir.card.md").read_text()[:600])

# %% [markdown]
# ## Running the NIR graph in snnTorch

# `target="snntorch"` writes the form snnTorch's importer runs exactly (IF as a LIF with beta 1 at its `dt = 1e-4`,
# average pooling as a sum pool with the 1/4 folded into the next weights, no readout integrator: the network's output
# at each step is the last layer's current, which the SNN sums over time into the logits). The input normalisation
# stays with the caller (`snn.normalize`). snnTorch runs one sample at a time; `run_exported` loops over the batch and
# also returns every neuron layer's spikes.

# %%
from spikeforge.export import load_snntorch, run_exported  # noqa: E402

net = load_snntorch(sf.to_nir(snn, target="snntorch"))
n = 8 if FAST else 50
with torch.no_grad():
    outs, spikes = run_exported(net, "snntorch", snn.normalize(images[:n]), steps=snn.timesteps)
theirs = outs.sum(0)
print(f"snnTorch vs spikeforge on {n} images: max |logit difference| {float((theirs - logits[:n]).abs().max()):.2e}, "
      f"same predicted class: {bool((theirs.argmax(1) == logits[:n].argmax(1)).all())}")
print("spike trains recorded in snnTorch:", {k: tuple(v.shape) for k, v in list(spikes.items())[:2]})

# %% [markdown]
# ## ONNX: a one-timestep SNN
#
# At `T = 1` an SNN is a feed-forward network of threshold units, which ONNX expresses with standard operators
# (`to_onnx` also exports ANN twins). With an example batch the file is run in onnxruntime and compared with PyTorch;
# the result goes into the model card. `onnx_session` runs the file like any other ONNX model.

# %%
with snn.at_timesteps(1):
    onnx_path = sf.to_onnx(snn, OUT / "model_t1.onnx", images[:16])
    report = check_onnx(onnx_path, snn, images)
print(report)
session = onnx_session(onnx_path)
scores = session.run(None, {"input": images.numpy()})[0]
print("onnxruntime output:", scores.shape)
