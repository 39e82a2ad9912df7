"""Expert trajectories on disk: per-epoch parameter snapshots in memory-mappable Arrow files."""

from pdd_ray.trajectories.store import FORMAT, FORMAT_VERSION, TrajectoryStore

__all__ = ["FORMAT", "FORMAT_VERSION", "TrajectoryStore"]
