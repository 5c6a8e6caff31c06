"""A shared assertion for the exercise checks: a check must leave the student's global generators alone."""

from __future__ import annotations

import random

import numpy as np
import torch


def assert_leaves_global_generators_alone(call) -> None:
    """Run ``call()`` (which must return True) between two snapshots of the global torch, NumPy and Python generators
    and assert that they did not move: a check that reseeded or consumed them would make the notebook's next cell
    give other numbers."""
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    assert call() is True
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]
