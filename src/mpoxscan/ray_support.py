"""Ray, the optional extra behind `predict --ray` and `cv --ray`: imported and started in one place."""

from __future__ import annotations

import logging

from mpoxscan.errors import MpoxscanError


def start_ray(address: str):
    """The ``ray`` module, connected: ``address`` "local" starts Ray on this machine, anything else is a cluster's
    address. A one-line error when the extra is not installed; errors only from Ray's own loggers."""
    try:
        import ray
    except ImportError:
        raise MpoxscanError("--ray needs Ray: pip install 'mpoxscan[ray]' (or make ray)") from None
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    return ray
