"""Recording one decoding step once and replaying it: a CUDA graph, or its CPU stand-in.

A `Graph` records a step function whose inputs are tensors that never move (a static step's
cache, position, row starts and token buffer, see static_step.py) and returns the step's output
tensor; every `replay` runs the recorded step again on what those inputs hold then and leaves
its result in that same output tensor:

    output = graph.capture(step, reset, warm_up_steps)   # warm up, then record one step
    tokens_buffer.copy_(tokens); graph.replay(); logits = output.clone()

- `CudaGraph` (a GPU): `torch.cuda.CUDAGraph`, as torch's docs do it. The warm-up steps run on a
  side stream (lazy initialisations: cuBLAS handles and workspaces, attention kernels, the
  allocator's blocks), each followed by `reset`; then one step is recorded on the capture
  stream — recorded, not run: nothing changes in the inputs — and `replay` launches it on the
  calling thread's current stream. A captured graph is an ordinary object: any thread may
  replay it (torch.compile's CUDA graph trees, by contrast, are kept per thread). Intermediates
  live in a private memory pool; `CudaGraphs` gives the graphs of one model one shared pool, which
  is safe because each graph's output stays alive for the graph's lifetime, each replay's
  output is copied out before the next replay, and the graphs of one model never run at once
  (one decode at a time holds its cache, see static_step.py).
- `EagerGraph` (a CPU, and tests): no recording. `capture` runs the warm-up steps and resets
  exactly as the CUDA graph does, then runs the step once and keeps its output; `replay` runs
  the step again and copies its result into that output. So everything around the three
  torch.cuda calls — static inputs, the static output, the resets after warm-up and capture,
  when a bucket is captured — runs and is tested on a CPU with the same code.

`reset` puts back what a step changed (the position, the cache entry it wrote); the caller
resets once more after `capture`, because the stand-in's capture does run the step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

Step = Callable[[], torch.Tensor]
Reset = Callable[[], None]
CAPTURE_ERROR_MODE = "thread_local"  # another thread's CUDA calls may not break a capture


class Graph(Protocol):
    """One recorded step (see the module doc)."""

    def capture(self, step: Step, reset: Reset, warm_up_steps: int) -> torch.Tensor:
        """Run step warm_up_steps times (each followed by reset), then record it once; → its
        output tensor, refreshed in place by every replay."""
        ...

    def replay(self) -> None:
        """Run the recorded step on what its input tensors hold now."""
        ...


class EagerGraph:
    """The CPU stand-in for a CUDA graph: capture and replay run the step (see the module doc)."""

    def __init__(self) -> None:
        self._step: Step | None = None
        self._output: torch.Tensor | None = None

    def capture(self, step: Step, reset: Reset, warm_up_steps: int) -> torch.Tensor:
        for _ in range(warm_up_steps):
            step()
            reset()
        self._step, self._output = step, step()
        return self._output

    def replay(self) -> None:
        if self._step is None or self._output is None:
            raise RuntimeError("replay before capture")
        self._output.copy_(self._step())


class CudaGraph:
    """A `torch.cuda.CUDAGraph` of one step on `device`, its memory from `pool` (None: its own)."""

    def __init__(self, device: torch.device, pool: tuple[int, int] | None = None) -> None:
        self.device, self.pool = device, pool
        self._graph: torch.cuda.CUDAGraph | None = None

    def capture(self, step: Step, reset: Reset, warm_up_steps: int) -> torch.Tensor:
        with torch.cuda.device(self.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warm_up_steps):
                    step()
                    reset()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode=CAPTURE_ERROR_MODE):
                output = step()
        self._graph = graph
        return output

    def replay(self) -> None:
        if self._graph is None:
            raise RuntimeError("replay before capture")
        self._graph.replay()


class CudaGraphs:
    """Makes the CUDA graphs of one model's steps on `device`, all sharing one memory pool."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pool: tuple[int, int] | None = None

    def __call__(self) -> CudaGraph:
        if self._pool is None:
            with torch.cuda.device(self.device):
                self._pool = torch.cuda.graph_pool_handle()
        return CudaGraph(self.device, self._pool)


def graphs_for(device: torch.device) -> Callable[[], Graph]:
    """The graph factory for a model on `device`: CUDA graphs on a GPU, the stand-in elsewhere."""
    return CudaGraphs(device) if device.type == "cuda" else EagerGraph
