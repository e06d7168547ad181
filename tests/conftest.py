"""Shared test setup: at most two intra-op threads (CI has two cores)."""

import os

import pytest
import torch

# A relative data directory (e.g. ``../shared/datasets``) would break for subprocesses that run in tmp dirs.
if os.environ.get("SPIKEFORGE_DATA"):
    os.environ["SPIKEFORGE_DATA"] = os.path.abspath(os.environ["SPIKEFORGE_DATA"])


@pytest.fixture(autouse=True)
def _few_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(min(old, 2))
    yield
    torch.set_num_threads(old)
