"""Shared pytest setup: run from the repository root, small thread counts, fixed seeds.

The suite runs on pytest-xdist workers (pytest.ini: one per core, whole modules per worker
so a module's fixtures - the learning guard's two runs among them - are built once). Each
worker then gets one torch thread, and the entry points it starts get one OpenMP thread:
two workers with two threads each would oversubscribe a 2-core machine, where threads that
wait on each other were measured 60x slower on tiny nets. Run alone, a process keeps two."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by every subprocess a test starts
torch.set_num_threads(1 if WORKERS > 1 else 2)

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
