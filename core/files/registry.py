"""Backend name -> file storage class (HS-3); ``files.backend`` in the config picks one."""

from __future__ import annotations

from collections.abc import Callable

from core.files.base import FileStorage
from core.files.directory import DirectoryStorage

# Each backend is built from the file store's location setting (files.dir resolved).
BACKENDS: dict[str, Callable[[str], FileStorage]] = {"directory": DirectoryStorage}


def make_storage(backend: str, location: str) -> FileStorage:
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise ValueError(
            f"files.backend must be one of {', '.join(sorted(BACKENDS))}; got {backend!r}"
        ) from None
    return factory(location)
