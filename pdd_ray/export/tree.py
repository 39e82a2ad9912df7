"""Write an export directory whole or not at all: files into a hidden sibling, then one rename."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from pdd_ray.errors import UserError
from pdd_ray.provenance import current_umask, now, versions, write_json


def write_tree(out: Path, files: dict[str, Callable[[Path], None]], description: dict) -> Path:
    """Create directory ``out`` holding ``files`` (relative name -> writer of a path) and ``export.json``."""
    if out.exists():
        raise UserError(f"--out {out} already exists; remove it or give a new directory name")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        staging.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700: teammates could not list it
        for name, write in files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
            path.chmod(0o666 & ~current_umask())
        write_json(staging / "export.json", {**description, "versions": versions(), "created": now()})
        staging.rename(out)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
