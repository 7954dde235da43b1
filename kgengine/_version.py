"""The installed version of kgengine (the one name every layer may import)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kgengine")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"
