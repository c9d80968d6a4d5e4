"""D2IP (Deep Dynamic Image Prior): the paper's modules, and the CPU's speed machinery in `cpu/`.

See docs/d2ip.md (the equation index maps each equation of the paper to its function here).
The reconstructor is registered by `variants.py` as `d2ip`, `d2ip-no-upws`, `d2ip-no-tpp`,
`dip` and `d2ip-scaled`.
"""

from worker.recon.d2ip.config import D2IPConfig, Iterations
from worker.recon.d2ip.data_term import DataTerm, whitened_system
from worker.recon.d2ip.execution import Execution, ReferenceExecution
from worker.recon.d2ip.lambda_rule import DataScaledRule, FixedLambda
from worker.recon.d2ip.mapping import OutputRange, mask_indices, to_volume
from worker.recon.d2ip.network import FastResUNet3D, NetConfig, count_parameters, make_input
from worker.recon.d2ip.objective import LossConfig, LossTerms, Objective
from worker.recon.d2ip.optimise import (
    FIRST_FRAME_ITERATIONS,
    LATER_FRAME_ITERATIONS,
    LR_REAL,
    LR_SIMULATED,
    UPWS_ITERATIONS,
    AdaptiveSchedule,
    AdaptiveStop,
    FixedIterations,
    FixedSchedule,
    FrameResult,
    adam_iteration,
    optimise_frame,
)
from worker.recon.d2ip.prior import TV4D, MaskGeometry, VolumeWindow

__all__ = [
    "FIRST_FRAME_ITERATIONS", "LATER_FRAME_ITERATIONS", "LR_REAL", "LR_SIMULATED", "TV4D",
    "UPWS_ITERATIONS", "AdaptiveSchedule", "AdaptiveStop", "D2IPConfig", "DataScaledRule",
    "DataTerm", "Execution", "FastResUNet3D", "FixedIterations", "FixedLambda", "FixedSchedule",
    "FrameResult", "Iterations", "LossConfig", "LossTerms", "MaskGeometry", "NetConfig",
    "Objective", "OutputRange", "ReferenceExecution", "VolumeWindow", "adam_iteration",
    "count_parameters", "make_input", "mask_indices", "optimise_frame", "to_volume",
    "whitened_system",
]
