"""Many sessions' D2IP in one step: the networks' weights stacked, one Adam iteration for all
(issue 17 §5; built on the paper modules, not the CPU kernels of `cpu/`).

Every session has its own network theta_n, fixed input Z_n, measurements, temporal window and
Adam moments, and all share the model (J, the mask, eq. 14's weights). `BatchedSessions` keeps
the N parameter sets stacked along a new first axis (`torch.func.stack_module_state`) and
evaluates phi(theta_n | Z_n) for all n in one vectorised call (`torch.func.vmap` over
`torch.func.functional_call` of one template network), then each session's eq. (14) through the
same `Objective.terms_of` as a single session. The sessions are independent, so the gradient of
the summed losses holds each session's own gradient. Adam then steps all sessions at once with a
step count per session (`StackedAdam`): a session that joins mid-way starts its bias correction
at its own count, as a separate `torch.optim.Adam` would. Sessions join (`join`) and leave
(`leave`, which hands back the weights, moments and window) between iterations.

On a GPU the one vectorised call replaces N small launches per layer; on the CPU it computes the
same (tested against N separate steps) and is the reference for that. No GPU was available where
this was written: docs/d2ip.md says what was and was not measured.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from worker.recon.d2ip.network import FastResUNet3D
from worker.recon.d2ip.objective import LossTerms, Objective
from worker.recon.d2ip.optimise import Moments, check_moments
from worker.recon.d2ip.prior import VolumeWindow

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as `optimise.Adam` uses them
EPS = 1e-8


class StackedAdam:
    """Adam (Kingma & Ba, as torch.optim.Adam without weight decay or amsgrad) on parameters
    stacked over sessions, one step count per session.

    Written out because torch's optimisers keep one step count per parameter tensor; here a
    tensor holds N sessions that joined at different times."""

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.exp_avg: dict[str, Tensor] = {}
        self.exp_avg_sq: dict[str, Tensor] = {}
        self.steps = torch.zeros(0)  # (N,) float32, Adam steps taken per session

    def step(self, params: Mapping[str, Tensor]) -> None:
        """One update of every stacked parameter from its `.grad` (first axis: sessions)."""
        b1, b2 = BETAS
        self.steps = self.steps + 1
        with torch.no_grad():
            for name, p in params.items():
                assert p.grad is not None
                shape = (-1,) + (1,) * (p.ndim - 1)
                steps = self.steps.to(p.device).view(shape)
                m = self.exp_avg[name].lerp_(p.grad, 1 - b1)
                v = self.exp_avg_sq[name].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (v.sqrt() / (1 - b2**steps).sqrt()).add_(EPS)
                p.sub_(self.lr / (1 - b1**steps) * m / denom)

    def append(self, params: Mapping[str, Tensor], moments: Moments | None) -> None:
        """Add one session (its parameters unstacked, `moments` by name as `Optimizer.moments`
        gives them; None or {}: a fresh Adam)."""
        step = check_moments(moments, set(params)) if moments else 0.0
        for name, p in params.items():
            m = moments[name] if moments else None
            avg = (torch.zeros_like(p) if m is None else
                   torch.as_tensor(m["exp_avg"]).reshape(p.shape).to(p))
            sq = (torch.zeros_like(p) if m is None else
                  torch.as_tensor(m["exp_avg_sq"]).reshape(p.shape).to(p))
            self.exp_avg[name] = _cat(self.exp_avg.get(name), avg)
            self.exp_avg_sq[name] = _cat(self.exp_avg_sq.get(name), sq)
        self.steps = torch.cat([self.steps, torch.tensor([step])])

    def remove(self, index: int) -> Moments:
        """Drop session `index`; its moments by name (`Optimizer.load_moments` takes them)."""
        step = torch.tensor(float(self.steps[index]))
        out = {name: {"step": step, "exp_avg": self.exp_avg[name][index].clone(),
                      "exp_avg_sq": self.exp_avg_sq[name][index].clone()}
               for name in self.exp_avg}
        for state in (self.exp_avg, self.exp_avg_sq):
            for name, t in state.items():
                state[name] = _without(t, index)
        self.steps = _without(self.steps, index)
        return out


def _cat(stacked: Tensor | None, one: Tensor) -> Tensor:
    """`stacked` (N, ...) with `one` (...) appended as row N; a new tensor, detached."""
    one = one.detach()[None]
    return one.clone() if stacked is None else torch.cat([stacked.detach(), one])


def _without(stacked: Tensor, index: int) -> Tensor:
    return torch.cat([stacked[:index], stacked[index + 1:]])


@dataclass
class SessionState:
    """What a session takes with it when it leaves: weights, Adam moments, temporal window."""

    weights: dict[str, Tensor]  # by parameter name (`FastResUNet3D.load_state_dict` takes it)
    moments: Moments
    window: VolumeWindow


class BatchedSessions:
    """N sessions' networks stacked; `step` runs one Adam iteration of eq. (14) for all.

    `objective`: the shared eq. (14) (its data term, prior, weights and output range; e.g.
    `execution.ReferenceExecution().objective(...)`); its own network only gives the
    architecture (a deep copy is the template) and its Z is not used."""

    def __init__(self, objective: Objective, lr: float) -> None:
        self.objective = objective
        self.template = copy.deepcopy(objective.net)
        self.keys: list[str] = []
        self.params: dict[str, Tensor] = {}  # stacked (N, ...) leaves that require grad
        self.inputs = torch.zeros(0)  # (N, 1, Cin, P, R, C): each session's Z
        self.windows: dict[str, VolumeWindow] = {}
        self.adam = StackedAdam(lr)

    def __len__(self) -> int:
        return len(self.keys)

    def join(self, key: str, net: FastResUNet3D, z: Tensor, moments: Moments | None = None,
             window: VolumeWindow | None = None) -> None:
        """Add a session: its network's current weights, its input Z, its Adam moments (None:
        fresh) and its temporal window (None: empty)."""
        if key in self.keys:
            raise ValueError(f"session {key!r} has joined already")
        if tuple(z.shape) != tuple(self.objective.z.shape):
            raise ValueError(f"Z has shape {tuple(z.shape)}, expected "
                             f"{tuple(self.objective.z.shape)}")
        one, _ = stack_module_state([net])  # (1, ...) copies, detached
        self.params = {name: _cat(self.params.get(name), t[0]).requires_grad_()
                       for name, t in one.items()}
        self.inputs = _cat(self.inputs if self.keys else None, z)
        self.adam.append({name: t[0] for name, t in one.items()}, moments)
        self.windows[key] = window if window is not None else self.objective.new_window()
        self.keys.append(key)

    def leave(self, key: str) -> SessionState:
        """Remove a session; its weights, moments and window."""
        index = self.keys.index(key)
        weights = {name: t[index].detach().clone() for name, t in self.params.items()}
        self.params = {name: _without(t.detach(), index).requires_grad_()
                       for name, t in self.params.items()}
        self.inputs = _without(self.inputs, index)
        moments = self.adam.remove(index)
        self.keys.pop(index)
        return SessionState(weights=weights, moments=moments, window=self.windows.pop(key))

    def outputs(self) -> Tensor:
        """phi(theta_n | Z_n) for every session, (N, P, R, C), in one vectorised call."""
        buffers = dict(self.template.named_buffers())
        return vmap(lambda p, z: functional_call(self.template, (p, buffers), (z,)))(
            self.params, self.inputs)

    def step(self, dvs: Mapping[str, Tensor],
             lams: Mapping[str, float] | None = None) -> dict[str, LossTerms]:
        """One Adam iteration for every session on its frame `dvs[key]` (M,) and its window;
        `lams[key]` overrides lambda_TV. Returns each session's terms before the step."""
        if set(dvs) != set(self.keys):
            raise ValueError("step needs one frame for every session and no other")
        objective = self.objective
        default = objective.loss.lam
        for p in self.params.values():
            p.grad = None
        raw = self.outputs()
        terms = {}
        for n, key in enumerate(self.keys):
            window = self.windows[key]
            lam = torch.tensor((lams or {}).get(key, default), dtype=torch.float32)
            terms[key] = objective.terms_of(raw[n], dvs[key].to(torch.float32), window.frames,
                                            window.weights(), lam)
        torch.stack([t.total for t in terms.values()]).sum().backward()
        self.adam.step(self.params)
        return terms
