"""Files outside Delta tables (landing folders, checkpoints) on any store, through pyarrow."""

from __future__ import annotations

from typing import Any


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path within it) for a local path or a URI such as s3://bucket/x."""
    from pyarrow import fs

    if "://" in uri and not uri.startswith("file://"):
        return fs.FileSystem.from_uri(uri)
    return fs.LocalFileSystem(), uri.removeprefix("file://")


def write_text(uri: str, text: str) -> None:
    """Write a whole file (a report, a page) to a local path or a URI, creating its folder."""
    import posixpath

    fs, target = filesystem(uri)
    if posixpath.dirname(target):
        fs.create_dir(posixpath.dirname(target), recursive=True)
    with fs.open_output_stream(target) as out:
        out.write(text.encode("utf-8"))
