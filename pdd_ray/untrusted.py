"""Files named by a manifest that may come from someone else (a download, a shared filesystem).

A synthetic set or an expert buffer names its files in ``manifest.json``. Such a
name is only followed when it is a plain file name inside the directory: no
``../x``, no absolute path, no separator, and no symlink whose target lies
outside the directory. Otherwise ``evaluate`` would read, and ``export`` copy,
any file the manifest's author chose.
"""

from __future__ import annotations

from pathlib import Path

from pdd_ray.errors import UserError


def member_file(directory: str | Path, name, what: str) -> Path:
    """``directory / name`` after checking that ``name`` is a plain file name that stays inside ``directory``."""
    directory = Path(directory)
    if not isinstance(name, str) or not _plain(name):
        raise UserError(f"{directory}/manifest.json names {what} {name!r}: only a plain file name inside the "
                        "directory is allowed (no path separators, '..' or absolute paths)")
    path = directory / name
    if path.is_symlink() and not _inside(path.resolve(), directory.resolve()):
        raise UserError(f"{path} ({what}) is a symlink to {path.resolve()}, outside {directory}: refused")
    return path


def _plain(name: str) -> bool:
    return name not in ("", ".", "..") and not any(c in name for c in "/\\\0") and not Path(name).is_absolute()


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


__all__ = ["member_file"]
