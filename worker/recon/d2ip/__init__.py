"""D2IP (Deep Dynamic Image Prior) core: 3D-FastResUNet, the eq. (11) loss, per-frame Adam.

See docs/d2ip.md. `speed.run_speed_benchmark` and `synthetic.make_problem` are imported from
their modules (benchmarks and tests only).
"""

from worker.recon.d2ip.loss import DataTerm, LossConfig, MaskGeometry, VolumeWindow
from worker.recon.d2ip.mapping import OutputRange, mask_indices, to_volume
from worker.recon.d2ip.network import FastResUNet3D, NetConfig, count_parameters, make_input
from worker.recon.d2ip.objective import LossTerms, Objective
from worker.recon.d2ip.optimise import (
    FIRST_FRAME_ITERATIONS,
    LATER_FRAME_ITERATIONS,
    LR_REAL,
    LR_SIMULATED,
    UPWS_ITERATIONS,
    AdaptiveStop,
    FixedIterations,
    FrameResult,
    adam_iteration,
    make_optimizer,
    optimise_frame,
)

__all__ = [
    "FIRST_FRAME_ITERATIONS", "LATER_FRAME_ITERATIONS", "LR_REAL", "LR_SIMULATED",
    "UPWS_ITERATIONS", "AdaptiveStop", "DataTerm", "FastResUNet3D", "FixedIterations",
    "FrameResult", "LossConfig", "LossTerms", "MaskGeometry", "NetConfig", "Objective",
    "OutputRange", "VolumeWindow", "adam_iteration", "count_parameters", "make_input",
    "make_optimizer", "mask_indices", "optimise_frame", "to_volume",
]
