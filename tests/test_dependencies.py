"""The declared dependency ranges install together with tools that pin numpy < 2."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"


def requirements() -> dict[str, Requirement]:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {Requirement(line).name: Requirement(line) for line in declared}


def test_pyarrow_range_excludes_the_releases_that_need_numpy_2():
    # pyarrow 26 raises "pyarrow requires NumPy 2.0 or newer" at import without declaring it;
    # 25.0.1 was checked to import and round-trip tables with numpy 1.26.4.
    pyarrow = requirements()["pyarrow"].specifier
    assert "25.0.1" in pyarrow and "14.0.0" in pyarrow
    assert "26.0.0" not in pyarrow and "26.0.1" not in pyarrow


def test_numpy_1_stays_allowed():
    assert "1.26.4" in requirements()["numpy"].specifier


def test_torch_range_respects_the_local_wheel_cap():
    assert "2.14.1" in requirements()["torch"].specifier and "2.15.0" not in requirements()["torch"].specifier
