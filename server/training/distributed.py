"""This process's place in a torchrun job: rank, world size, the process group's lifetime."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                   int(env.get("LOCAL_RANK", 0)))

    def init(self, device: torch.device) -> None:
        """Join the process group (gloo on CPU, nccl on CUDA) unless single or already in."""
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def barrier(self) -> None:
        """Wait for every rank (nothing to wait for when single)."""
        if self.enabled and dist.is_initialized():
            dist.barrier()

    def close(self) -> None:
        """Leave the process group, all ranks together (a rank that tears gloo down while
        another still talks to it can abort)."""
        if self.enabled and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place; returns t."""
        if self.enabled:
            dist.all_reduce(t)
        return t
