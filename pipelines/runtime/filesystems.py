"""Files outside Delta tables (landing folders, checkpoints) on any store, through pyarrow."""

from __future__ import annotations

from typing import Any


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path within it) for a local path or a URI such as s3://bucket/x."""
    from pyarrow import fs

    if is_remote(uri):
        # Hadoop's s3a:// (Spark outside EMR) is the same bucket as s3://, which pyarrow knows.
        return fs.FileSystem.from_uri("s3://" + uri.removeprefix("s3a://") if uri.startswith("s3a://") else uri)
    return fs.LocalFileSystem(), uri.removeprefix("file://")


def write_text(uri: str, text: str) -> None:
    """Write a whole file (a report, a page) to a local path or a URI, creating its folder."""
    import posixpath

    fs, target = filesystem(uri)
    if posixpath.dirname(target):
        fs.create_dir(posixpath.dirname(target), recursive=True)
    with fs.open_output_stream(target) as out:
        out.write(text.encode("utf-8"))


def is_remote(uri: str) -> bool:
    """A URI on an object store (s3://...), not a path on this machine's file system."""
    return "://" in uri and not uri.startswith("file://")


def copy_tree(source: str, target: str) -> bool:
    """Copy a folder and everything under it, between a local path and a URI either way;
    False when there is no such folder."""
    from pyarrow import fs

    source_fs, source_path = filesystem(source)
    if source_fs.get_file_info(source_path).type == fs.FileType.NotFound:
        return False
    target_fs, target_path = filesystem(target)
    target_fs.create_dir(target_path, recursive=True)
    fs.copy_files(source_path, target_path, source_filesystem=source_fs, destination_filesystem=target_fs)
    return True
