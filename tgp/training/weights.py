"""Loading a network's weights from a state_dict, a ``net.pt`` or a Lightning checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tgp.errors import CheckpointMismatchError


def strip_prefix(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_net_weights(net: nn.Module, path: str | Path, setting: str) -> None:
    """Load a plain state_dict, a ``net.pt`` or a Lightning checkpoint into ``net``, or explain why not."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointMismatchError(f"{setting}={str(path)!r}: no such file. Fix: point {setting} to an existing checkpoint.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CheckpointMismatchError(
            f"{setting}={str(path)!r}: the file is not a readable torch checkpoint ({type(e).__name__}). "
            "Fix: point it to a Lightning .ckpt or a state_dict saved with torch.save."
        ) from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f"{setting}={str(path)!r}: holds no state_dict. Fix: save net.state_dict().")
    if any(k.startswith("net.") for k in state):
        state = strip_prefix(state, "net.")
    fc = state.get("fc.weight")
    if fc is not None and fc.shape[0] != net.fc.out_features:
        raise CheckpointMismatchError(
            f"{setting}={str(path)!r}: the checkpoint classifies {fc.shape[0]} classes but the data has "
            f"{net.fc.out_features}. Fix: use a teacher trained on this dataset, or leave {setting} unset to train one."
        )
    own = net.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(
            f"{setting}={str(path)!r}: the checkpoint does not fit the architecture {getattr(net, 'arch', type(net).__name__)} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} mis-shaped tensors, e.g. "
            f"{(missing + unexpected + mismatched)[:3]}). Fix: select the teacher config that matches the checkpoint "
            "(teacher=<arch> teacher.net.width=<width>)."
        )
    net.load_state_dict(state)
