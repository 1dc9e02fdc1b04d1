"""Where the featurizers compute: device selection, CUDA autocast, CPU threads for small work."""

from __future__ import annotations

import contextlib

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """Map ``"auto"`` to CUDA when available, else CPU; check any explicit device.

    Raises
    ------
    ValueError
        For a string torch does not know, or a CUDA device on a machine without one.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}."
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this "
                "machine; use device='auto' or 'cpu'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
    elif resolved.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.")
    return resolved


def autocast(device: torch.device):
    """bf16 autocast on CUDA (the backbone is frozen, so precision loss is benign)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Positions (batch x height x width) of one operation below which a second CPU thread
# costs more in synchronisation than it saves.
_POSITIONS_PER_THREAD = 8192


@contextlib.contextmanager
def cpu_threads_for(device: torch.device, positions: int):
    """Limit torch's CPU threads to what operations over ``positions`` can use.

    The CAE's operations are small (a batch of 64 maps of 8 x 8 is 4,096 positions):
    split over several threads, each operation ends in a barrier where a thread waits
    for the others, and a thread descheduled by another process stalls the rest. One
    thread per ``_POSITIONS_PER_THREAD`` positions keeps large maps parallel and small
    ones steady under load (measurements: docs/gpu.rst, "CPU threads"). The previous
    setting is restored afterwards. No effect on CUDA.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, positions // _POSITIONS_PER_THREAD)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
