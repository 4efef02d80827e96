"""Segment-parallel encoding: the processes of a ``torchrun`` job share out a video's segments.

Each segment is its own network with its own seed (:func:`compress.encode.segment_seed`), so
a segment's bytes do not depend on which process encodes it, and the file is byte-identical
for any number of processes on the same kind of device. Rank ``r`` of ``W`` encodes the
segments ``i`` with ``i % W == r``; the encoded segments are gathered to rank 0, which writes
the file; the other ranks print nothing on standard output and exit 0.

Launch commands (``enerv-compress`` notices ``WORLD_SIZE > 1`` in its environment):

- one machine, ``N`` GPUs (one process per GPU, ``cuda:LOCAL_RANK``)::

      torchrun --standalone --nproc_per_node N $(which enerv-compress) in.mp4 -o out.bin --segment-frames 120

  ``python -m torch.distributed.run`` is the same launcher, for a shell without ``torchrun``
  on its PATH. torchrun runs the console script with the Python that runs torchrun itself, so
  launch it from the environment where the codec is installed.

- several machines: the same command on each, with ``--nnodes M --nproc_per_node N
  --rdzv-backend c10d --rdzv-endpoint HOST:PORT --rdzv-id JOB`` in place of ``--standalone``
  (``HOST`` one of the machines, reachable from all). The input must be readable at the same
  path on every machine and the output's folder must exist on each: every machine keeps the
  checkpoints of its own ranks there, and rank 0 writes the file on its machine.

The backend is gloo on the CPU; on CUDA it is NCCL for tensors with gloo beside it for the
encoded segments, which travel as pickled objects and need no GPU memory. The collectives wait
up to :data:`COLLECTIVE_TIMEOUT` for the slowest rank, since one segment can take hours;
torchrun stops every rank when one of them fails, so nobody waits that long for a dead one.

On a CPU, several ranks on one machine gain only as far as cores are idle: one fit already uses
every core PyTorch is given (torchrun gives each rank one thread unless ``OMP_NUM_THREADS`` is
set), so on a 2-core machine two ranks of one thread each run about as fast as one of two.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.errors import InputError
from pipeline.render import resolve_device

COLLECTIVE_TIMEOUT = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Ranks:
    """This process's place among those that share out the segments (one process by default)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def leader(self) -> bool:
        """Whether this process writes the file (and reports)."""
        return self.rank == 0

    @property
    def label(self) -> str:
        """A prefix for this process's progress lines ('' alone)."""
        return f"rank {self.rank}: " if self.world > 1 else ""

    def owns(self, index: int) -> bool:
        """Whether this process encodes segment ``index``."""
        return index % self.world == self.rank

    def gather(self, items: list[Any]) -> list[Any] | None:
        """Every process's ``items``, concatenated in rank order, on rank 0; None elsewhere."""
        if self.world == 1:
            return list(items)
        import torch.distributed as dist

        received = [None] * self.world if self.leader else None
        dist.gather_object(list(items), received, dst=0)
        return [item for part in received for item in part] if self.leader else None

    def from_leader(self, value: Any) -> Any:
        """Rank 0's ``value``, on every process."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


SINGLE = Ranks()


def _environment_int(name: str, default: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None and default is not None:
        return default
    try:
        return int(text)
    except (TypeError, ValueError):
        raise InputError(f"the environment variable {name} must be an integer, got {text!r} "
                         "(launch several processes with torchrun)") from None


def launched_by_torchrun() -> bool:
    """Whether the environment describes a job of several processes (``WORLD_SIZE > 1``)."""
    return _environment_int("WORLD_SIZE", 1) > 1


def ranks_from_environment() -> Ranks:
    """This process's place in the job that torchrun's variables describe."""
    world = _environment_int("WORLD_SIZE", 1)
    rank = _environment_int("RANK", 0)
    local_rank = _environment_int("LOCAL_RANK", 0)
    local_world = _environment_int("LOCAL_WORLD_SIZE", world)
    if not (0 <= rank < world and 0 <= local_rank < local_world):
        raise InputError(f"RANK {rank} / WORLD_SIZE {world} / LOCAL_RANK {local_rank} do not describe a process "
                         "of the job (launch several processes with torchrun)")
    return Ranks(rank, world, local_rank, local_world)


@contextlib.contextmanager
def process_group(device: str) -> Iterator[tuple[Ranks, str]]:
    """Joins the torchrun job of the environment for the ``with`` block: (ranks, this rank's device).

    Without ``WORLD_SIZE > 1`` it joins nothing and yields (:data:`SINGLE`, ``device``). On
    CUDA (``device`` 'cuda', or 'auto' with a GPU) each rank takes ``cuda:LOCAL_RANK``.
    """
    if not launched_by_torchrun():
        yield SINGLE, device
        return
    import torch.distributed as dist

    ranks = ranks_from_environment()
    on_cuda = resolve_device(device).type == "cuda"
    if on_cuda:
        if ranks.local_rank >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK {ranks.local_rank} has no GPU: this machine has "
                             f"{torch.cuda.device_count()}; start at most that many processes on it")
        torch.cuda.set_device(ranks.local_rank)
        device = f"cuda:{ranks.local_rank}"
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if on_cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    try:
        yield ranks, device
    finally:
        dist.destroy_process_group()
