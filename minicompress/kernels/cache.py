"""Where Numba caches the compiled kernels: a user cache folder, never inside the installed package.

Every kernel is `@njit(cache=True)`. Left alone, Numba writes that cache to `__pycache__` next to the
source, so an installed minicompress would write into `site-packages/minicompress/kernels/`: files
that `pip uninstall` does not remove and that shadow a later editable install. Instead:

    NUMBA_CACHE_DIR, when set             Numba's own setting, used as it is
    $XDG_CACHE_HOME/minicompress/numba    Linux and other POSIX systems (~/.cache when XDG_CACHE_HOME is unset)
    ~/Library/Caches/minicompress/numba   macOS
    %LOCALAPPDATA%\\minicompress\\numba     Windows

and when that folder cannot be created or written, `<temp dir>/minicompress-<user>/numba`.

Numba picks a function's cache folder once, when `@njit(cache=True)` decorates it, from
`numba.config.CACHE_DIR`; so `use_user_cache_dir()` runs at the top of `kernels/__init__.py`, before
any kernel module is imported. It sets `numba.config.CACHE_DIR`, not the environment, so child
processes and other programs using Numba are unaffected.
"""
import getpass
import os
import sys
import tempfile

from numba.core import config


def user_cache_dir():
    """The platform's per-user cache folder for minicompress's Numba cache (see the module docstring)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
    elif sys.platform == "darwin":
        base = os.path.join(os.path.expanduser("~"), "Library", "Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minicompress", "numba")


def _writable(folder):
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def _temp_cache_dir():
    try:
        user = getpass.getuser()
    except Exception:  # no user name in the environment or the password database
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"minicompress-{user}", "numba")


def use_user_cache_dir():
    """Point Numba's cache at the user cache folder unless NUMBA_CACHE_DIR is set. Returns the folder."""
    if config.CACHE_DIR:
        return config.CACHE_DIR
    folder = user_cache_dir()
    if not _writable(folder):
        folder = _temp_cache_dir()
        _writable(folder)
    config.CACHE_DIR = folder
    return folder
