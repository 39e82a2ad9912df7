"""The export front door: registered formats, one-line errors before anything is written."""

import pytest

from pdd_ray.errors import UserError
from pdd_ray.export import FORMATS, export_set


def test_the_three_formats_are_registered():
    assert FORMATS.names() == ["folder", "parquet", "pt"]


def test_unknown_format_lists_the_choices(stored_set):
    with pytest.raises(UserError, match="choose one of: folder, parquet, pt"):
        export_set(stored_set, "csv")


@pytest.mark.parametrize("to", ["parquet", "pt", "folder"])
def test_unwritable_or_missing_output_directories_fail_before_reading(stored_set, tmp_path, to):
    with pytest.raises(UserError, match="does not exist"):
        export_set(stored_set, to, tmp_path / "missing" / "out")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("to", ["pt", "folder"])
def test_directory_formats_default_inside_the_set(stored_set, to):
    out = export_set(stored_set, to)
    assert out.parent == stored_set and (out / "export.json").is_file()


def test_the_cli_exports_every_format(stored_set, tmp_path, capsys):
    from pdd_ray.cli import main
    assert main(["export", str(stored_set), "--to", "pt", "--out", str(tmp_path / "pt")]) == 0
    assert main(["export", str(stored_set), "--to", "folder", "--out", str(tmp_path / "folder")]) == 0
    assert main(["export", str(stored_set), "--stored"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'pt'}" in out and (tmp_path / "folder" / "001_b").is_dir()
    assert (stored_set / "synthetic.parquet").is_file()


def test_the_cli_refuses_an_existing_directory_in_one_line(stored_set, tmp_path, capsys):
    from pdd_ray.cli import main
    (tmp_path / "pt").mkdir()
    assert main(["export", str(stored_set), "--to", "pt", "--out", str(tmp_path / "pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0]
