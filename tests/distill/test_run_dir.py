from pathlib import Path

from pdd_ray.config import load_config
from pdd_ray.distill.config import DistillConfig
from pdd_ray.distill.run_dir import RunDir


def test_run_dir_names_every_path_from_the_config(tmp_path):
    config = load_config(DistillConfig, None, [f"out={tmp_path / 'run'}"])
    paths = RunDir.of(config)
    assert paths.synthetic == tmp_path / "run" / "synthetic"
    assert paths.stage_checkpoint(0) == tmp_path / "run" / "stages" / "stage_1.ckpt"
    assert paths.experts(0) == tmp_path / "run" / "experts" / "stage_1"
    assert paths.experts(2) == tmp_path / "run" / "experts" / "stage_3"
    assert paths.partition(1) == tmp_path / "run" / "experts" / "stage_2.partition"
    assert paths.stage_picture(1).name == "stage_2.png" and paths.metrics.name == "metrics.json"


def test_without_transitions_every_stage_matches_the_given_buffer(tmp_path):
    (tmp_path / "buffer").mkdir()
    paths = RunDir(Path("run"), buffer=str(tmp_path / "buffer"), transitions=False)
    assert paths.experts(0) == paths.experts(3) == tmp_path / "buffer"
