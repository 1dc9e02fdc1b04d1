"""Downloads: the offline switch and the timeout that keeps them from hanging.

Two things are fetched from the internet on first use: pretrained backbone weights
(:mod:`sklearn_cae.backbones`) and MedMNIST files (:mod:`sklearn_cae.datasets`). Both
ask :func:`offline` before trying, and both download inside :func:`download_timeout`,
so that an unreachable server gives a clear error after a while instead of a hang.

Set ``SKLEARN_CAE_OFFLINE=1`` (or ``true``, ``yes``) to turn downloads off: whatever is
not already on disk then fails at once, with a message that says where to put the file.
``HF_HUB_OFFLINE`` and ``TORCH_HUB_OFFLINE``, the switches of the Hugging Face hub and
of ``torch.hub``, are honoured too.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

__all__ = ["DOWNLOAD_TIMEOUT_S", "OFFLINE_ENVIRONMENT_VARIABLES", "download_timeout", "offline"]

#: Environment variables that turn downloads off; the first is this package's own.
OFFLINE_ENVIRONMENT_VARIABLES = ("SKLEARN_CAE_OFFLINE", "HF_HUB_OFFLINE", "TORCH_HUB_OFFLINE")
#: Seconds to wait for a server before taking the machine for offline.
DOWNLOAD_TIMEOUT_S = 30

_TRUE_VALUES = ("1", "true", "yes")


def offline() -> bool:
    """Whether downloads are turned off by the environment.

    Returns
    -------
    bool
        True when one of :data:`OFFLINE_ENVIRONMENT_VARIABLES` is ``1``, ``true`` or
        ``yes`` (in any case).

    Examples
    --------
    >>> from sklearn_cae.downloads import offline
    >>> isinstance(offline(), bool)  # True in the test suite, which sets the flag
    True
    """
    return any(
        os.environ.get(name, "").lower() in _TRUE_VALUES for name in OFFLINE_ENVIRONMENT_VARIABLES
    )


@contextlib.contextmanager
def download_timeout(seconds: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    """Give every new socket a timeout for the duration of a download.

    ``torch.hub`` and ``medmnist`` open their connections without a timeout; the
    default socket timeout is the one knob that reaches them. The previous default is
    restored on exit, also when the download fails.

    Parameters
    ----------
    seconds : float, default=DOWNLOAD_TIMEOUT_S
        Timeout of each blocking socket operation.

    Examples
    --------
    >>> import socket
    >>> from sklearn_cae.downloads import download_timeout
    >>> with download_timeout(5):
    ...     socket.getdefaulttimeout()
    5.0
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
