"""Fixtures shared by the training tests (import them into a test module by name)."""

from __future__ import annotations

import pytest
import torch

from . import train_data


@pytest.fixture(autouse=True)
def _restore_threads():
    """The trainer sets torch's thread count; give every test the count it started with."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(comfy):
    """The prepared tiny training dataset (built once, cached under .cache/)."""
    threads = torch.get_num_threads()
    try:
        return train_data.ensure_prepared()
    finally:
        torch.set_num_threads(threads)
