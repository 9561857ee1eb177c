"""The landing-folder source: JSON-lines files dropped in `source.files.path` (events) and
`source.files.crm_path` (CRM changes), plain or gzip, read line by line with each line's
exact bytes and the byte offset where it starts.

Spark's text source cannot say where a line starts, and `binaryFile` holds a whole file
in one row (split per line with a generator, it decodes the file again for every line, so
its cost grows with the square of the file). This is a PySpark Python data source, like
the Kinesis one:

- The driver lists the folder through pyarrow's filesystems (local paths, `s3://`, ...)
  and appends the files it admits to a log kept beside the query's checkpoint. Offset N
  means "the first N files of that log", so a batch replayed after a crash reads exactly
  the files it read the first time, and a file is admitted once however often it is listed.
- A plain file larger than the split size is planned as several byte ranges, read by
  separate tasks; small files are packed together. A range owns the lines that *start*
  inside it (the rule of Hadoop's LineRecordReader), so each line is read exactly once
  wherever the cuts fall.
- A task reads its ranges in chunks of `chunk_bytes` and yields Arrow record batches: it
  holds one chunk and the longest line in memory, however big the file.
- A gzip file (`.gz`, as Kinesis Firehose and Kafka Connect's S3 sink write them) is one
  range, decompressed as a stream; its offsets count decompressed bytes.

Lines end at `\\n`; a `\\r` before it (CRLF files) is not part of the line. The last line
needs no newline. An empty line is a record (validation quarantines it as not JSON).
Files must appear whole (written elsewhere, then moved or renamed in), as for Spark's own
file source; names starting with `.` or `_` are ignored.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

from pipelines.config import Config
from pipelines.runtime.filesystems import filesystem

FORMAT = "tailor_files"
SCHEMA = "raw binary, source_partition string, source_offset bigint, source_timestamp timestamp"
SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_SPLIT_BYTES = 128 * 1024 * 1024
MIN_SPLIT_BYTES = 1024 * 1024
_LOG_SUFFIX = ".json"
# Every this many entries the log is folded into one snapshot, so a restart reads a few
# files, not one per batch ever admitted (as Spark's file source compacts its own log).
COMPACT_EVERY = 100
_SNAPSHOT_SUFFIX = ".snapshot"
_CLEANED_MARKER = "cleaned.json"
_LOG_NAME = re.compile(r"(?P<tmp>\.)?(?P<number>\d{20})(?P<kind>\.json|\.snapshot)(?(tmp)\.tmp)")


@dataclass(frozen=True)
class LandedFile:
    path: str
    size: int
    mtime_ms: int


@dataclass(frozen=True)
class Range:
    """The lines of `path` that start at a byte offset in [start, end)."""

    path: str
    start: int
    end: int
    mtime_ms: int

    @property
    def compressed(self) -> bool:
        return self.path.endswith(".gz")


class RangesPartition(InputPartition):
    def __init__(self, ranges: list[Range]):
        super().__init__(ranges[0].path)
        self.ranges = ranges

    def __repr__(self) -> str:
        return f"RangesPartition({len(self.ranges)} range(s), first {self.ranges[0]})"


def plan_ranges(files: list[LandedFile], split_bytes: int) -> list[list[Range]]:
    """Cut plain files larger than `split_bytes` into ranges of about that size, and pack
    small files and ranges together into partitions of about that size. A gzip file stays
    whole: it can only be read from its start."""
    pieces: list[Range] = []
    for landed in files:
        if landed.path.endswith(".gz") or landed.size <= split_bytes:
            pieces.append(Range(landed.path, 0, landed.size, landed.mtime_ms))
            continue
        step = math.ceil(landed.size / math.ceil(landed.size / split_bytes))
        pieces += [Range(landed.path, start, min(start + step, landed.size), landed.mtime_ms)
                   for start in range(0, landed.size, step)]
    partitions: list[list[Range]] = []
    current: list[Range] = []
    current_bytes = 0
    for piece in pieces:
        size = piece.end - piece.start
        if current and current_bytes + size > split_bytes:
            partitions.append(current)
            current, current_bytes = [], 0
        current.append(piece)
        current_bytes += size
    if current:
        partitions.append(current)
    return partitions


def split_lines(chunks: Iterator[bytes], first: int, end: int | None) -> Iterator[tuple[list[bytes], list[int]]]:
    """(lines, start offsets) per chunk of a byte stream whose first byte is a line start at
    offset `first`, up to the last line that starts before `end` (None: the stream's end).
    Each line loses its `\\n` and a `\\r` before it."""
    carry = b""
    position = first  # where `carry` starts
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        lines = data.split(b"\n")
        carry = lines.pop()
        if not lines:
            continue
        starts = []
        for line in lines:
            starts.append(position)
            position += len(line) + 1
        if end is not None and starts[-1] >= end:
            keep = bisect.bisect_left(starts, end)
            if keep:
                yield _without_cr(lines[:keep]), starts[:keep]
            return
        yield _without_cr(lines), starts
    if carry and (end is None or position < end):
        yield _without_cr([carry]), [position]


def _without_cr(lines: list[bytes]) -> list[bytes]:
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _chunks(stream: Any, size: int) -> Iterator[bytes]:
    while True:
        chunk = stream.read(size)
        if not chunk:
            return
        yield bytes(chunk)


def read_range(piece: Range, chunk_bytes: int) -> Iterator[tuple[list[bytes], list[int]]]:
    """The lines `piece` owns, chunk by chunk."""
    fs, path = filesystem(piece.path)
    if piece.compressed:
        with fs.open_input_stream(path, compression="gzip") as stream:
            yield from split_lines(_chunks(stream, chunk_bytes), 0, None)
        return
    with fs.open_input_file(path) as handle:
        first = 0
        if piece.start > 0:
            # The line the cut falls in belongs to the range before: start after its newline.
            handle.seek(piece.start - 1)
            scanned = piece.start - 1
            while True:
                block = bytes(handle.read(64 * 1024))
                if not block:
                    return
                newline = block.find(b"\n")
                if newline >= 0:
                    first = scanned + newline + 1
                    break
                scanned += len(block)
            if first >= piece.end:
                return
            handle.seek(first)
        yield from split_lines(_chunks(handle, chunk_bytes), first, piece.end)


def _read_json(fs: Any, path: str) -> dict[str, Any]:
    with fs.open_input_stream(path) as stream:
        return json.loads(bytes(stream.read()).decode("utf-8"))  # type: ignore[no-any-return]


def _write_json(fs: Any, path: str, value: dict[str, Any]) -> None:
    """Written under a temporary name, then renamed: a reader never sees half a file."""
    staging = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.tmp")
    with fs.open_output_stream(staging) as out:
        out.write(json.dumps(value).encode("utf-8"))
    fs.move(staging, path)


class FilesStreamReader(DataSourceStreamReader):
    """Offsets are {"files": N}: the first N files of the admitted-files log."""

    def __init__(self, options: dict[str, str]):
        self.folder = options["path"]
        self.log_path = options["log_path"]
        self.chunk_bytes = int(options.get("chunk_bytes", DEFAULT_CHUNK_BYTES))
        self.max_split_bytes = int(options.get("max_split_bytes", DEFAULT_MAX_SPLIT_BYTES))
        self.min_partitions = max(1, int(options.get("min_partitions", "1")))
        self.max_new_files = int(options.get("max_files_per_trigger", "0")) or None
        self.max_new_bytes = int(options.get("max_bytes_per_trigger", "0")) or None
        # A run-once query takes what had landed when it started, in batches of the caps
        # above, and stops there: the folder is listed once.
        self.available_now = options.get("available_now", "false") == "true"
        self.delete_read_files = options.get("clean_source", "off") == "delete"
        # Which of the query's sources this is, named in its offsets; and the query's
        # checkpoint, whose offset log says what its last committed batch read.
        self.stream = options.get("stream", "")
        self.checkpoint = options.get("checkpoint")
        self._caught_up = False
        self._cleaned: int | None = None
        self._landed_at_start: set[str] | None = None
        self._files: list[LandedFile] | None = None
        self._known: set[str] = set()
        self._entries_since_snapshot = 0

    def _admitted(self) -> list[LandedFile]:
        """The log, read once per reader (the reader lives as long as the query): the newest
        snapshot, then the entries after it. Entries a snapshot covers are skipped, so a
        crash between writing a snapshot and deleting them leaves a log that reads the same."""
        if self._files is not None:
            return self._files
        from pyarrow import fs as pafs

        fs, log = filesystem(self.log_path)
        snapshot: list[LandedFile] = []
        entries: list[tuple[int, list[LandedFile]]] = []
        for info in fs.get_file_info(pafs.FileSelector(log, allow_not_found=True)):
            numbered = _LOG_NAME.fullmatch(posixpath.basename(info.path))
            if info.type != pafs.FileType.File or numbered is None or numbered["tmp"]:
                continue
            entry = _read_json(fs, info.path)
            files = [LandedFile(*row) for row in entry["files"]]
            if numbered["kind"] == _SNAPSHOT_SUFFIX:
                snapshot = max(snapshot, files, key=len)
            else:
                entries.append((entry["first"], files))
        files = list(snapshot)
        self._entries_since_snapshot = 0
        for first, admitted in sorted(entries, key=lambda entry: entry[0]):
            if first < len(snapshot):
                continue
            if first != len(files):
                raise RuntimeError(f"the files source log {self.log_path} has a gap before entry {first}")
            files += admitted
            self._entries_since_snapshot += 1
        self._files, self._known = files, {landed.path for landed in files}
        return files

    def _admit(self, new: list[LandedFile]) -> None:
        """Append `new` to the log as one entry, written under a temporary name and then
        renamed (on object stores a single PUT is atomic already)."""
        files = self._admitted()
        fs, log = filesystem(self.log_path)
        fs.create_dir(log, recursive=True)
        first = len(files)
        _write_json(fs, posixpath.join(log, f"{first:020d}{_LOG_SUFFIX}"),
                    {"first": first, "files": [[f.path, f.size, f.mtime_ms] for f in new]})
        files += new
        self._known.update(landed.path for landed in new)
        self._entries_since_snapshot += 1
        if self._entries_since_snapshot >= COMPACT_EVERY:
            try:
                self._compact(fs, log)
            except OSError as error:  # the log reads the same at every step: try again next admission
                logging.getLogger("tailor.files").warning("compacting %s failed: %s", self.log_path,
                                                          type(error).__name__)

    def _compact(self, fs: Any, log: str) -> None:
        """Fold the log into one snapshot of every admitted file, then delete what it covers."""
        from pyarrow import fs as pafs

        files = self._admitted()
        _write_json(fs, posixpath.join(log, f"{len(files):020d}{_SNAPSHOT_SUFFIX}"),
                    {"first": 0, "files": [[f.path, f.size, f.mtime_ms] for f in files]})
        for info in fs.get_file_info(pafs.FileSelector(log)):
            name = posixpath.basename(info.path)
            numbered = _LOG_NAME.fullmatch(name)
            if info.type != pafs.FileType.File or numbered is None:
                continue
            # Entries and older snapshots the new snapshot covers; staging left by a crash.
            if int(numbered["number"]) < len(files) or (numbered["kind"] == _SNAPSHOT_SUFFIX and numbered["tmp"]):
                fs.delete_file(info.path)
        self._entries_since_snapshot = 0

    def _listing(self) -> list[LandedFile]:
        from pyarrow import fs as pafs

        fs, folder = filesystem(self.folder)
        scheme = self.folder[: self.folder.index("://") + 3] if "://" in self.folder else ""
        found = []
        for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
            name = posixpath.basename(info.path)
            if info.type != pafs.FileType.File or name.startswith((".", "_")) or not name.endswith(SUFFIXES):
                continue
            path = f"{scheme}{info.path}" if scheme and not scheme.startswith("file") else info.path
            found.append(LandedFile(path, int(info.size), int(info.mtime_ns // 1_000_000)))
        return sorted(found, key=lambda landed: (landed.mtime_ms, landed.path))

    def _offset(self, files: int) -> dict:
        return {"files": files, "stream": self.stream} if self.stream else {"files": files}

    def initialOffset(self) -> dict:
        return self._offset(0)

    def latestOffset(self) -> dict:
        if not self._caught_up:
            self._caught_up = True
            self._catch_up_cleaning()
        self._admitted()
        landed = self._listing()
        if self.available_now:
            # Of what had landed at the start, what is still there, as it is now.
            if self._landed_at_start is None:
                self._landed_at_start = {file.path for file in landed}
            landed = [file for file in landed if file.path in self._landed_at_start]
        new = self._within_caps([file for file in landed if file.path not in self._known])
        # A batch takes what was admitted and not yet read, so capping admission caps it.
        if new:
            self._admit(new)
        return self._offset(len(self._admitted()))

    def _within_caps(self, new: list[LandedFile]) -> list[LandedFile]:
        """The first of `new` up to max_files_per_trigger and max_bytes_per_trigger; at
        least one file, however large. The caps are soft: bytes are a gzip file's
        compressed size, and a batch replayed after a crash also holds the files admitted
        just before it."""
        if self.max_new_files:
            new = new[: self.max_new_files]
        if self.max_new_bytes:
            total = 0
            for taken, file in enumerate(new):
                total += file.size
                if total > self.max_new_bytes and taken > 0:
                    return new[:taken]
        return new

    def partitions(self, start: dict, end: dict) -> list[RangesPartition]:
        files = self._admitted()[int(start["files"]): int(end["files"])]
        if not files:
            return []
        total = sum(landed.size for landed in files)
        # Enough ranges to keep every core busy, none larger than max_split_bytes.
        split = min(self.max_split_bytes, max(MIN_SPLIT_BYTES, math.ceil(total / self.min_partitions)))
        return [RangesPartition(ranges) for ranges in plan_ranges(files, split)]

    def read(self, partition: RangesPartition) -> Iterator[Any]:
        import pyarrow as pa

        for piece in partition.ranges:
            path = pa.scalar(piece.path, pa.string())
            modified = pa.scalar(piece.mtime_ms * 1000, pa.timestamp("us", tz="UTC"))
            for lines, starts in read_range(piece, self.chunk_bytes):
                count = len(lines)
                yield pa.RecordBatch.from_arrays(
                    [pa.array(lines, pa.binary()), pa.repeat(path, count), pa.array(starts, pa.int64()),
                     pa.repeat(modified, count)],
                    names=["raw", "source_partition", "source_offset", "source_timestamp"])

    def commit(self, end: dict) -> None:
        """Spark calls this once the batches through `end` have committed (when it plans
        the next batch): with clean_source=delete, their files are no longer needed, even
        for a replay."""
        if not self.delete_read_files:
            return
        from pyarrow import fs as pafs

        done = self._read_marker()
        upto = int(end["files"])
        if upto <= done:
            return
        for landed in self._admitted()[done:upto]:
            fs, path = filesystem(landed.path)
            info = fs.get_file_info(path)
            # A file landed again under the same name is another file: it stays.
            if info.type == pafs.FileType.File and (int(info.size), int(info.mtime_ns // 1_000_000)) == (
                    landed.size, landed.mtime_ms):
                fs.delete_file(path)
        fs, log = filesystem(self.log_path)
        _write_json(fs, posixpath.join(log, _CLEANED_MARKER), {"files": upto})
        self._cleaned = upto

    def _catch_up_cleaning(self) -> None:
        """Delete what the query's last committed batch read. Spark calls `commit` only when
        it plans a next batch, so a job that stopped after its last batch (SIGTERM, --once,
        a quiet feed) would otherwise keep those files until new ones land. The batch's
        end offset for this stream is in the checkpoint's offset log."""
        from pyarrow import fs as pafs

        if not (self.delete_read_files and self.checkpoint):
            return
        fs, root = filesystem(self.checkpoint)
        committed = [int(info.base_name) for info in fs.get_file_info(
            pafs.FileSelector(posixpath.join(root, "commits"), allow_not_found=True))
            if info.type == pafs.FileType.File and info.base_name.isdigit()]
        if not committed:
            return
        offsets = posixpath.join(root, "offsets", str(max(committed)))
        if fs.get_file_info(offsets).type != pafs.FileType.File:
            return
        with fs.open_input_stream(offsets) as stream:
            lines = bytes(stream.read()).decode("utf-8").splitlines()
        for line in lines[2:]:  # a version line, the batch's metadata, then one offset per source
            offset = json.loads(line) if line.strip().startswith("{") else {}
            if offset.get("stream") == self.stream:
                self.commit(offset)

    def _read_marker(self) -> int:
        """How many admitted files are deleted already: kept beside the log, so a restart
        does not try every file ever read again; read once per reader, as the log is."""
        from pyarrow import fs as pafs

        if self._cleaned is None:
            fs, log = filesystem(self.log_path)
            marker = posixpath.join(log, _CLEANED_MARKER)
            exists = fs.get_file_info(marker).type == pafs.FileType.File
            self._cleaned = int(_read_json(fs, marker)["files"]) if exists else 0
        return self._cleaned


class FilesDataSource(DataSource):
    """`spark.readStream.format("tailor_files").option("path", folder).option("log_path", ...)`"""

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema: Any) -> FilesStreamReader:
        return FilesStreamReader(self.options)


def file_records(rows: DataFrame, folder: str) -> DataFrame:
    """The source's rows -> the raw columns validation expects (see pipelines.sources.raw)."""
    return rows.select(
        F.col("raw"),
        F.lit("files").alias("source_kind"),
        F.lit(folder).alias("source_stream"),
        F.col("source_partition"),
        F.col("source_offset").cast("string").alias("source_offset"),
        F.col("source_timestamp"),
    )


def _read_folder(spark: SparkSession, config: Config, folder_setting: str, stream: str,
                 checkpoint: str, once: bool) -> DataFrame:
    settings = config.source.files
    folder = config.under_root(folder_setting)
    reader = (spark.readStream.format(FORMAT)
              .option("path", folder)
              .option("log_path", f"{checkpoint.rstrip('/')}/files_source/{stream}")
              .option("chunk_bytes", str(settings.chunk_bytes))
              .option("max_split_bytes", str(settings.max_split_bytes))
              .option("min_partitions", str(spark.sparkContext.defaultParallelism))
              .option("clean_source", settings.clean_source)
              .option("stream", stream)
              .option("checkpoint", checkpoint))
    if settings.max_files_per_trigger:
        reader = reader.option("max_files_per_trigger", str(settings.max_files_per_trigger))
    if settings.max_bytes_per_trigger:
        reader = reader.option("max_bytes_per_trigger", str(settings.max_bytes_per_trigger))
    if once:
        reader = reader.option("available_now", "true")
    return file_records(reader.load(), folder)


def read_files(spark: SparkSession, config: Config, checkpoint: str, once: bool) -> dict[str, DataFrame]:
    """{"events": ..., "crm": ...} raw streams from the two landing folders."""
    spark.dataSource.register(FilesDataSource)
    settings = config.source.files
    return {"events": _read_folder(spark, config, settings.path, "events", checkpoint, once),
            "crm": _read_folder(spark, config, settings.crm_path, "crm", checkpoint, once)}
