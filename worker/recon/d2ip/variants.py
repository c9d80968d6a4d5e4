"""The registered D2IP variants (the ablation of paper V.A.1 and V.A.4, Fig. 5b and 8), and the
one place where a reconstructor's execution strategy is chosen (`cpu.execution_for`).

| name | UPWS | TPP | 4D-TV | start of every frame |
|---|---|---|---|---|
| `d2ip` | yes | yes | yes | frame 1 warm start (450), later previous frame (250) |
| `d2ip-no-upws` | no | yes | yes | frame 1 Kaiming (1800), later previous frame (250) |
| `d2ip-no-tpp` | yes | no | yes | every frame from the warm start (450) |
| `dip` | no | no | no (lam = 0) | every frame from the same Kaiming init (1800) |
| `d2ip-scaled` | yes | yes | yes, lambda per frame | as `d2ip` (beyond the paper: `lambda_rule`) |

`dip` is the paper's "baseline DIP" of Fig. 5b, without acceleration and without handcrafted
priors; its `lam` can be set to put 4D-TV back (the red curve of Fig. 5b).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from worker.recon.base import register
from worker.recon.d2ip.config import D2IPConfig
from worker.recon.d2ip.cpu import execution_for
from worker.recon.d2ip.reconstructor import D2IP, resolve_device

if TYPE_CHECKING:
    from worker.forward.model import ForwardModel

Flags = dict[str, bool]
VARIANTS: dict[str, tuple[Flags, dict[str, Any]]] = {  # name: (fixed flags, default options)
    "d2ip": ({}, {}),
    "d2ip-no-upws": ({"upws": False, "tpp": True}, {}),
    "d2ip-no-tpp": ({"upws": True, "tpp": False}, {}),
    # no handcrafted prior (paper Fig. 5b); lam > 0 puts 4D-TV back (Fig. 5b's red curve)
    "dip": ({"upws": False, "tpp": False}, {"lam": 0.0, "lam_rule": "fixed"}),
    # beyond the paper: the data-scaled per-frame lambda (`lambda_rule`)
    "d2ip-scaled": ({"upws": True, "tpp": True}, {"lam_rule": "data"}),
}
# On breaths' tidal differences, TPP from breath to breath starts close to the answer: stop by
# convergence (measured in issue 15: tol 5e-3 stops after tens of iterations once warm;
# docs/ventilation.md "Breath-synchronous D2IP").
TIDAL_OPTIONS: dict[str, Any] = {"schedule": "adaptive", "adaptive_tol": 5e-3}
TIDAL_VARIANTS = ("d2ip", "d2ip-scaled")


def variant_config(name: str, **options: Any) -> D2IPConfig:
    """The configuration of variant `name` with API `options` (see `D2IPConfig.from_options`);
    TypeError for an option the variant fixes."""
    flags, defaults = VARIANTS[name]
    if fixed := sorted(set(options) & set(flags)):
        raise TypeError(f"{name}: {', '.join(fixed)} fixed by the variant")
    return D2IPConfig.from_options(name, **{**defaults, **options, **flags})


def _register(name: str) -> None:
    """Register `name`: `factory(model, device="auto", **options)` -> D2IP."""

    def factory(model: ForwardModel, device: str = "auto", **options: Any) -> D2IP:
        config = variant_config(name, **options)
        dev = resolve_device(device)
        return D2IP(model, config, dev, execution_for(dev))

    flags, defaults = VARIANTS[name]
    factory.__doc__ = f"D2IP variant {name!r}: {flags or 'UPWS, TPP'}, defaults {defaults}."
    register(name, tidal=TIDAL_OPTIONS if name in TIDAL_VARIANTS else None)(factory)


for _name in VARIANTS:
    _register(_name)
