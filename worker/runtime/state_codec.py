"""Encode a reconstructor's `state_dict()` without pickles: a JSON tree plus named arrays.

Leaves: None, bool, int, float, str, numpy arrays and scalars, torch tensors (stored as numpy,
restored on the CPU: `load_state_dict` moves them where it needs them). Containers: dict (keys
of any leaf type, e.g. an optimizer's integer parameter ids), list, tuple. Anything else is a
TypeError, so a state that cannot be restored exactly is never written.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def encode(state: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """(JSON-serialisable tree, arrays by name)."""
    arrays: dict[str, np.ndarray] = {}

    def enc(x: Any) -> Any:
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, dict):
            return {"dict": [[enc(k), enc(v)] for k, v in x.items()]}
        if isinstance(x, (list, tuple)):
            return {type(x).__name__: [enc(v) for v in x]}
        if isinstance(x, np.generic):
            return {"scalar": _store(arrays, np.asarray(x))}
        if isinstance(x, np.ndarray):
            return {"array": _store(arrays, x)}
        if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
            return {"tensor": _store(arrays, x.detach().cpu().numpy())}
        raise TypeError(f"checkpoint: cannot store a {type(x).__name__} without pickling")

    return enc(state), arrays


def decode(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The state back from `encode`'s output."""
    if not isinstance(tree, dict):
        return tree
    (kind, body), = tree.items()
    if kind == "dict":
        return {decode(k, arrays): decode(v, arrays) for k, v in body}
    if kind == "list":
        return [decode(v, arrays) for v in body]
    if kind == "tuple":
        return tuple(decode(v, arrays) for v in body)
    if kind == "scalar":
        return arrays[body][()]
    if kind == "array":
        return arrays[body]
    if kind == "tensor":
        import torch

        return torch.from_numpy(np.array(arrays[body]))
    raise ValueError(f"checkpoint: unknown node {kind!r}")


def _store(arrays: dict[str, np.ndarray], value: np.ndarray) -> str:
    if value.dtype.hasobject:
        raise TypeError("checkpoint: object arrays cannot be stored without pickling")
    name = f"a{len(arrays)}"
    arrays[name] = value
    return name
