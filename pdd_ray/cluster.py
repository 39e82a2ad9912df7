"""Connecting to Ray: an existing cluster (``--address`` / ``RAY_ADDRESS``) or a local one started on demand."""

from __future__ import annotations

import os
from contextlib import contextmanager

from pdd_ray.errors import UserError


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None):
    """Yield with Ray initialised; shut down only a local Ray that this call started."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    except ConnectionError as exc:
        raise UserError(f"cannot connect to the Ray cluster at '{address}': {exc}") from None
    try:
        yield
    finally:
        ray.shutdown()
