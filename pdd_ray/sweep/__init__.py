"""``pdd-ray sweep``: PDD settings swept with Ray Tune (grid / sampled, FIFO or ASHA), resumable.

config.py  the SweepConfig          space.py   Tune's param space, trial names, derived IPC
plan.py    every trial's run config, checked up front, and the shared buffer
trial.py   one trial (a PDD run)    tuner.py   the Tuner (new or restored)    console.py one line per trial
report.py  results.csv/json, the table and the heatmap
"""

from pdd_ray.sweep.config import SweepConfig, load_sweep_config
from pdd_ray.sweep.plan import SweepPlan, make_plan
from pdd_ray.sweep.tuner import report_sweep, run_sweep

__all__ = ["SweepConfig", "SweepPlan", "load_sweep_config", "make_plan", "report_sweep", "run_sweep"]
