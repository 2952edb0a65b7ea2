"""How many CPU threads torch uses: one rule, applied once per process, safe for many kernels on one server.

torch starts with one thread per core. On a course server where dozens of notebook kernels share the
cores, that oversubscribes the machine many times over; and the fast profile's matrices are small, so on
shared CPUs extra threads cost more in waiting than they save. The rule (:func:`choose_threads`):

1. ``UNIIL_THREADS``, if set: the server's administrator sets it once for every kernel (e.g. in the
   JupyterHub spawner's environment);
2. else ``OMP_NUM_THREADS``, if set: torch has already taken it, and we leave it;
3. else 1 thread for the CPU profiles (``fast``, ``cpu``);
4. else (``full``, on a GPU, or no profile given) torch's own default.

Only entry points call it, once, at start: each notebook's first cell (a kernel is a process of its own)
and the command line. Library functions never change the thread count. The one other entry point is a
worker process of ``benchmark --devices cpu,cpu`` (:func:`share_cores`): torch would give each worker
one thread per core, so two workers on two cores would run four threads and slow each other down
(measured: the README's main job took 31 min that way, 9.5 with one thread each).
"""

from __future__ import annotations

import os

THREADS_ENV_VAR = "UNIIL_THREADS"
SINGLE_THREAD_PROFILES = ("fast", "cpu")


def choose_threads(profile: str | None = None) -> int:
    """Set torch's intra-op thread count by the rule in the module docstring; return the count in use.

    Args:
        profile: the run profile's name (``"fast"``, ``"cpu"``, ``"full"``), or None for the environment
            variables only.

    Raises:
        ValueError: ``UNIIL_THREADS`` is set but is not a positive integer.
    """
    import torch

    wanted = os.environ.get(THREADS_ENV_VAR)
    if wanted is not None:
        if not wanted.strip().isdigit() or int(wanted) < 1:
            raise ValueError(f"{THREADS_ENV_VAR} must be a positive integer (threads per process), got {wanted!r}")
        torch.set_num_threads(int(wanted))
    elif os.environ.get("OMP_NUM_THREADS") is None and profile in SINGLE_THREAD_PROFILES:
        torch.set_num_threads(1)
    return torch.get_num_threads()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def share_cores(workers: int) -> int:
    """Set torch's thread count for one of ``workers`` processes that share this machine's cores; return it.

    ``UNIIL_THREADS`` and ``OMP_NUM_THREADS`` win as in :func:`choose_threads`; otherwise each worker gets an
    equal share of the cores, at least one thread (two workers on two cores: one thread each).

    Raises:
        ValueError: ``workers`` is below 1, or ``UNIIL_THREADS`` is not a positive integer.
    """
    import torch

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if os.environ.get(THREADS_ENV_VAR) is not None or os.environ.get("OMP_NUM_THREADS") is not None:
        return choose_threads()
    torch.set_num_threads(max(1, available_cores() // workers))
    return torch.get_num_threads()
