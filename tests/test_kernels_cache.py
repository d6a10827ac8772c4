"""Numba's cache goes to a user cache folder, never into the package: a copy of the package is
imported in a fresh process with a temporary HOME / XDG_CACHE_HOME, and its kernels compiled
(`erf` is compiled for its signatures when it is decorated, `max_pool2d` on its first call)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import minicompress

PACKAGE = Path(minicompress.__file__).parent
COMPILE = ("import numpy as np, minicompress.kernels.special, minicompress.functional as F, minicompress as mc; "
           "F.max_pool2d(mc.tensor(np.ones((1, 1, 4, 4), np.float32)), 2)")


def _run_in_copy(tmp_path, **env):
    """Copy the package (no caches), import it and compile kernels with `env`; return the copy's folder."""
    copy = tmp_path / "site"
    shutil.copytree(PACKAGE, copy / "minicompress", ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    environ = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH")}
    environ.update(PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1", HOME=str(tmp_path / "home"), **env)
    subprocess.run([sys.executable, "-c", COMPILE], env=environ, cwd=tmp_path, check=True, timeout=600)
    return copy / "minicompress"


def _cache_files(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.suffix in (".nbi", ".nbc"))


def _new_files(package_copy):
    """Files in the package copy that are not in the package's sources."""
    return sorted(p.relative_to(package_copy) for p in package_copy.rglob("*")
                  if p.is_file() and not (PACKAGE / p.relative_to(package_copy)).is_file())


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="the XDG folders are the Linux and POSIX default")
def test_kernel_cache_goes_to_the_user_cache_folder_not_the_package(tmp_path):
    package_copy = _run_in_copy(tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert _new_files(package_copy) == []
    assert _cache_files(tmp_path / "xdg" / "minicompress" / "numba")
    assert not (tmp_path / "home").exists() or _cache_files(tmp_path / "home") == []


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="the XDG folders are the Linux and POSIX default")
def test_without_xdg_cache_home_the_cache_goes_to_home_dot_cache(tmp_path):
    package_copy = _run_in_copy(tmp_path)
    assert _new_files(package_copy) == []
    assert _cache_files(tmp_path / "home" / ".cache" / "minicompress" / "numba")


def test_numba_cache_dir_wins(tmp_path):
    package_copy = _run_in_copy(tmp_path, XDG_CACHE_HOME=str(tmp_path / "xdg"), NUMBA_CACHE_DIR=str(tmp_path / "mine"))
    assert _new_files(package_copy) == []
    assert _cache_files(tmp_path / "mine")
    assert not (tmp_path / "xdg").exists() or _cache_files(tmp_path / "xdg") == []
