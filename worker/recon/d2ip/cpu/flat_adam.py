"""Adam over one flat copy of a network's parameters: the CPU's `optimise.Adam`.

`FlatAdam(net, lr)` makes every parameter of `net` a view of one flat tensor and every
gradient a view of one flat gradient, then runs torch's fused Adam on that single tensor. The
update is torch.optim.Adam's, element by element; what changes is the per-tensor overhead: one
fused-Adam call and one fill per iteration instead of one per parameter tensor (134). Autograd
accumulates each parameter's gradient in place into its view, so the flat gradient is complete
after `backward()`.

The moments are exposed by parameter name (`moments`, `load_moments`), the format the session
state and the warm-start store keep (`optimise.Optimizer`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from worker.recon.d2ip.optimise import Moments, check_moments


class FlatAdam:
    """Adam (fused kernel) over all of `net`'s parameters, held in one flat tensor."""

    def __init__(self, net: nn.Module, lr: float) -> None:
        named = list(net.named_parameters())
        self.flat = nn.Parameter(torch.cat([p.detach().reshape(-1) for _, p in named]))
        self.flat.grad = torch.zeros_like(self.flat)
        self.spans: dict[str, tuple[int, int, torch.Size]] = {}
        start = 0
        for name, p in named:
            n = p.numel()
            p.data = self.flat.data[start:start + n].view_as(p)
            p.grad = self.flat.grad[start:start + n].view_as(p)
            self.spans[name] = (start, n, p.shape)
            start += n
        self.adam = torch.optim.Adam([self.flat], lr=lr, fused=True)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the flat gradient (kept, not set to None: the parameters' gradients view it)."""
        del set_to_none
        assert self.flat.grad is not None
        self.flat.grad.zero_()

    def step(self) -> None:
        self.adam.step()

    def moments(self) -> Moments:
        """Adam's state by parameter name ({} before the first step): `step`, `exp_avg`,
        `exp_avg_sq`, as torch.optim.Adam keeps them per parameter (views, not copies)."""
        state = self.adam.state.get(self.flat)
        if not state:
            return {}
        return {name: {"step": state["step"],
                       "exp_avg": state["exp_avg"][s:s + n].view(shape),
                       "exp_avg_sq": state["exp_avg_sq"][s:s + n].view(shape)}
                for name, (s, n, shape) in self.spans.items()}

    def load_moments(self, moments: Moments) -> None:
        """Set Adam's state from `moments` (by parameter name, as `moments()` gives it; the
        per-name tensors may also be flat). Every parameter must be present and
        all must share one step count."""
        step_count = check_moments(moments, set(self.spans))
        flat: dict[str, Tensor] = {}
        for key in ("exp_avg", "exp_avg_sq"):
            buf = torch.zeros_like(self.flat.detach())
            for name, (s, n, _) in self.spans.items():
                buf[s:s + n] = torch.as_tensor(moments[name][key]).reshape(-1)
            flat[key] = buf
        step = torch.tensor(step_count, dtype=torch.float32, device=self.flat.device)
        self.adam.state[self.flat] = {"step": step, **flat}
