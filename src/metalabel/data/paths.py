"""Where metalabel looks for data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$METALABEL_CACHE``, else ``$XDG_CACHE_HOME/metalabel``, else ``~/.cache/metalabel``."""
    if env := os.environ.get("METALABEL_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "metalabel"


def data_dirs() -> list[Path]:
    """Folders searched for data files the user already has, most specific first."""
    dirs: list[Path] = []
    if env := os.environ.get("METALABEL_DATA"):
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    dirs.append(cache_dir() / "data")
    return dirs
