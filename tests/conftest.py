"""Shared test set-up: few threads (2-core CI), deterministic seeds, real audio fixtures."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
from jack_fixtures import jack_server  # noqa: E402,F401 (a fixture for every test module)
from midi_fixtures import jack_midi  # noqa: E402,F401 (a fixture for every test module)
