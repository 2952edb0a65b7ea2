"""Several processes, one run: data-parallel training with ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc_per_node N -m uniil_lib benchmark ...`` starts N copies of the command; each finds its rank in
the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and :func:`init_from_environment` joins them into one
process group (NCCL on GPUs, gloo on the CPU). What the ranks then share, and how:

- **Training** (:meth:`World.shard`, :meth:`World.average_gradients`): every rank draws the same seeded global
  batch and trains on its own slice of it; after the backward pass the gradients of the trainable parameters are
  summed over the ranks, each weighted by its slice's share of the batch, which is the gradient of the global
  batch's mean loss. This is an explicit all-reduce and not ``DistributedDataParallel``: a method's training
  forward is not one module call (two towers, prompts, routing contexts and hooks), so there is no module for
  DDP to wrap; the all-reduce does what DDP's does, in buckets, after the backward pass instead of during it.
  A parameter without a gradient on every rank (an expert no image of the batch was routed to) keeps none, as
  in a one-process run, so AdamW skips it there too.
- **State** that training counts locally is summed before it is used (:meth:`World.sum_`): the MoE usage counters
  before activate-freeze.
- **Prediction** (:meth:`World.gather`): each rank predicts a contiguous slice of a test set and the slices are
  gathered in rank order.
- **Files** (checkpoints, results, plots) are written by rank 0 only (:attr:`World.is_main`); the others wait at a
  barrier.

Without a process group, :func:`current` is the one-process world (rank 0 of 1) and every call here does nothing,
so the library runs unchanged.

Independent runs (methods x seeds on several devices) need no process group: :mod:`uniil_lib.benchmark` spreads
them over devices with one worker process per device (``benchmark --devices``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

BUCKET_ELEMENTS = 2**24  # gradient elements per all-reduce (64 MiB of fp32)


class DistributedSetupError(RuntimeError):
    """The process group could not be set up; says which setting was wrong."""


@dataclass(frozen=True)
class World:
    """The processes of one run: this one's ``rank`` among ``size``."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def shard(self, indices: Sequence[int]) -> list[int]:
        """This rank's contiguous slice of ``indices`` (slices differ in length by at most one)."""
        indices = list(indices)
        base, extra = divmod(len(indices), self.size)
        start = self.rank * base + min(self.rank, extra)
        return indices[start:start + base + (1 if self.rank < extra else 0)]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place (integer counters included); returns it."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def weighted_mean(self, value: float, weight: float) -> float:
        """``sum_r weight_r * value_r`` over the ranks (weights summing to one: a global mean)."""
        if not self.active:
            return value
        total = torch.tensor([value * weight], dtype=torch.float64, device=_collective_device())
        return float(self.sum_(total).item())

    def average_gradients(self, parameters: Sequence[torch.nn.Parameter], weight: float) -> None:
        """Replace every gradient by ``sum_r weight_r * grad_r`` (see the module docstring); a parameter that has
        no gradient on any rank keeps none."""
        if not self.active or not parameters:
            return
        present = torch.tensor([p.grad is not None for p in parameters], dtype=torch.int32,
                               device=parameters[0].device)
        dist.all_reduce(present, op=dist.ReduceOp.MAX)
        for bucket in _buckets(parameters):
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in bucket])
            flat.mul_(weight)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for p in bucket:
                p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
                offset += p.numel()
        for p, keep in zip(parameters, present.tolist()):
            if not keep:
                p.grad = None

    def gather(self, part: object) -> list:
        """Every rank's ``part`` (any picklable object), in rank order."""
        if not self.active:
            return [part]
        parts: list = [None] * self.size
        dist.all_gather_object(parts, part)
        return parts


def _buckets(parameters: Sequence[torch.nn.Parameter]) -> list[list[torch.nn.Parameter]]:
    buckets, current, size = [], [], 0
    for p in parameters:
        if current and size + p.numel() > BUCKET_ELEMENTS:
            buckets.append(current)
            current, size = [], 0
        current.append(p)
        size += p.numel()
    return buckets + ([current] if current else [])


def _collective_device() -> torch.device:
    """Where small tensors for collectives live: the current GPU under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def current() -> World:
    """This process's :class:`World`: from the process group if one is set up, else rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched_by_torchrun() -> bool:
    """Whether the environment says this process is one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def init_from_environment(device: str) -> World:
    """Join the process group ``torchrun`` set up in the environment (a no-op for a single process).

    Args:
        device: the run's device: ``"cuda"`` (each rank takes GPU ``LOCAL_RANK`` and NCCL) or ``"cpu"`` (gloo).

    Raises:
        DistributedSetupError: the environment is incomplete, or asks for more GPUs than there are.
    """
    if not launched_by_torchrun():
        return current()
    if dist.is_initialized():
        return current()
    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise DistributedSetupError(f"WORLD_SIZE is set but {', '.join(missing)} is not: start several processes "
                                    "with torchrun (torchrun --nproc_per_node N -m uniil_lib benchmark ...)")
    backend = "gloo"
    if str(device).startswith("cuda"):
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise DistributedSetupError(f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} GPUs: "
                                        "start at most one process per GPU (--nproc_per_node)")
        torch.cuda.set_device(local)
        backend = "nccl"
    dist.init_process_group(backend=backend)
    return current()


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
