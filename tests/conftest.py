"""Shared pytest setup: run from the repository root, small thread counts, fixed seeds."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

torch.set_num_threads(2)

import pytest  # noqa: E402


@pytest.fixture
def one_torch_thread():
    """Tiny nets: with two OpenMP threads on a busy 2-core machine the threads wait on each
    other (measured 60x slower); one thread for the test, restored afterwards. A module opts
    in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
