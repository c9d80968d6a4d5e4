"""What exists only for CPU speed: the same functions as the paper modules, computed faster.

- `channels_last.py`, `channels_last_ops.py`: phi(theta | Z) on channels-last tensors;
- `fused_net.py`, `fused_loss.py`: fused units, blocks and loss terms with hand-written backward;
- `library.py`, `kernels/`: the C++ kernels, their build, load and threads;
- `flat_adam.py`: Adam on one flat parameter tensor;
- `thread_tuner.py`: the kernels' thread count and spin, chosen by timing iterations and by
  the machine's load.

`CpuExecution` bundles them as an execution strategy (`execution.ReferenceExecution`'s
interface); `execution_for` is where a reconstructor's strategy is chosen. This package
depends on the network and the loss; they never import it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from worker.recon.d2ip.cpu import library
from worker.recon.d2ip.cpu.channels_last import ChannelsLastNetwork
from worker.recon.d2ip.cpu.flat_adam import FlatAdam
from worker.recon.d2ip.cpu.fused_loss import FusedDataTerm, FusedTV4D
from worker.recon.d2ip.cpu.thread_tuner import ThreadTuner
from worker.recon.d2ip.data_term import DataTerm
from worker.recon.d2ip.execution import Execution, ReferenceExecution
from worker.recon.d2ip.network import FastResUNet3D
from worker.recon.d2ip.objective import LossConfig, Prior
from worker.recon.d2ip.optimise import Optimizer
from worker.recon.d2ip.prior import MaskGeometry


class CpuExecution(ReferenceExecution):
    """The CPU's strategy: phi on channels-last tensors, `FlatAdam`, and with `fused` (None:
    when the kernels are available) the fused network, data term and prior, with a
    `ThreadTuner` as the iteration hook. Float32 CPU tensors only."""

    def __init__(self, fused: bool | None = None) -> None:
        super().__init__()
        if fused is None:
            fused = library.available()
        if fused and not library.available():
            raise ValueError("fused kernels need a C++ compiler (and EITMON_FUSED unset or 1)")
        self.fused = fused
        self.name = "cpu-fused" if fused else "cpu-channels-last"
        self.tuner = ThreadTuner() if fused else None
        self.hook = self.tuner

    def phi(self, net: FastResUNet3D, z: Tensor) -> Callable[[], Tensor]:
        return ChannelsLastNetwork(net, z, fused=self.fused)

    def data_term(self, jacobian: Tensor, basis: Tensor | None) -> DataTerm:
        return FusedDataTerm(jacobian, basis) if self.fused else DataTerm(jacobian, basis)

    def prior(self, geom: MaskGeometry, loss: LossConfig) -> Prior:
        if not self.fused:
            return super().prior(geom, loss)
        return FusedTV4D(geom, loss.lam_s, loss.lam_t, loss.eps)

    def optimizer(self, net: FastResUNet3D, lr: float) -> Optimizer:
        return FlatAdam(net, lr)


def execution_for(device: torch.device) -> Execution:
    """The strategy for a device: `CpuExecution` on the CPU, the reference elsewhere (CUDA)."""
    return CpuExecution() if device.type == "cpu" else ReferenceExecution()


__all__ = ["CpuExecution", "execution_for"]
