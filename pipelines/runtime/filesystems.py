"""Files outside Delta tables (landing folders, checkpoints) on any store, through pyarrow."""

from __future__ import annotations

from typing import Any


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path within it) for a local path or a URI such as s3://bucket/x."""
    from pyarrow import fs

    if "://" in uri and not uri.startswith("file://"):
        return fs.FileSystem.from_uri(uri)
    return fs.LocalFileSystem(), uri.removeprefix("file://")
