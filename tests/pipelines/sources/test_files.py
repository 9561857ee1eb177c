"""The landing-folder source: every line's exact bytes and start offset, however a file is
cut into ranges, plain or gzip, and through Spark across several partitions."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from pipelines.sources.files import FilesDataSource, LandedFile, Range, plan_ranges, read_range, split_lines

# A file with the awkward cases, and its lines written down by hand: (offset, bytes).
CONTENT = (b'{"a":1}\n'            # 0
           b'{"b":"\xff\xfe"}\r\n'  # 8: invalid UTF-8, CRLF ending
           b'\n'                    # 20: an empty line
           b'{"c":3}\n'             # 21
           b'\r\n'                  # 29: a line holding only its CR
           b'{"d":"\xc3\xa9"}')     # 31: UTF-8, no final newline
EXPECTED = [(0, b'{"a":1}'), (8, b'{"b":"\xff\xfe"}'), (20, b""), (21, b'{"c":3}'), (29, b""),
            (31, b'{"d":"\xc3\xa9"}')]


def _lines_of(piece: Range, chunk_bytes: int) -> list[tuple[int, bytes]]:
    return [(start, line) for lines, starts in read_range(piece, chunk_bytes)
            for line, start in zip(lines, starts, strict=True)]


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 64 * 1024])
def test_every_cut_reads_each_line_exactly_once(tmp_path, chunk_bytes):
    path = tmp_path / "events.jsonl"
    path.write_bytes(CONTENT)
    size = len(CONTENT)
    for cut in range(size + 1):
        first = _lines_of(Range(str(path), 0, cut, 0), chunk_bytes)
        second = _lines_of(Range(str(path), cut, size, 0), chunk_bytes)
        assert first + second == EXPECTED, f"cut at byte {cut}"
    for a in range(0, size, 5):
        for b in range(a, size + 1, 4):
            three = [line for start, end in ((0, a), (a, b), (b, size))
                     for line in _lines_of(Range(str(path), start, end, 0), chunk_bytes)]
            assert three == EXPECTED, f"cuts at {a} and {b}"


def test_a_final_newline_ends_the_last_line_and_adds_none(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"one\ntwo\n")
    assert _lines_of(Range(str(path), 0, 8, 0), 4) == [(0, b"one"), (4, b"two")]
    path.write_bytes(b"")
    assert _lines_of(Range(str(path), 0, 0, 0), 4) == []
    path.write_bytes(b"\n")
    assert _lines_of(Range(str(path), 0, 1, 0), 4) == [(0, b"")]


def test_gzip_is_read_whole_with_offsets_in_the_decompressed_stream(tmp_path):
    path = tmp_path / "firehose.jsonl.gz"
    path.write_bytes(gzip.compress(CONTENT))
    landed = LandedFile(str(path), path.stat().st_size, 0)
    (only,) = plan_ranges([landed], split_bytes=4)
    assert only == [Range(str(path), 0, landed.size, 0)]
    assert _lines_of(only[0], 5) == EXPECTED


def test_large_files_are_cut_and_small_ones_packed():
    big = LandedFile("big.jsonl", 1000, 1)
    small = [LandedFile(f"s{n}.jsonl", 100, 2) for n in range(3)]
    partitions = plan_ranges([big, *small], split_bytes=300)
    assert partitions == [
        [Range("big.jsonl", 0, 250, 1)], [Range("big.jsonl", 250, 500, 1)], [Range("big.jsonl", 500, 750, 1)],
        [Range("big.jsonl", 750, 1000, 1)],
        [Range("s0.jsonl", 0, 100, 2), Range("s1.jsonl", 0, 100, 2), Range("s2.jsonl", 0, 100, 2)],
    ]


def test_split_lines_stops_at_the_first_line_starting_at_the_end():
    chunks = iter([b"ab\ncd\nef\ngh"])
    assert list(split_lines(chunks, 10, 16)) == [([b"ab", b"cd"], [10, 13])]


def _read_stream(spark, folder: Path, log: Path, **options: str):
    spark.dataSource.register(FilesDataSource)
    reader = spark.readStream.format("tailor_files").option("path", str(folder)).option("log_path", str(log))
    for key, value in options.items():
        reader = reader.option(key, value)
    return reader.load()


def _run_once(spark, frame, checkpoint: Path):
    """Rows of each batch, with the Spark partition that read them."""
    from pyspark.sql import functions as F

    batches: list[list] = []

    def collect(batch, _batch_id):
        batches.append(batch.withColumn("task", F.spark_partition_id()).collect())

    query = (frame.writeStream.foreachBatch(collect).option("checkpointLocation", str(checkpoint))
             .trigger(availableNow=True).start())
    query.awaitTermination()
    return batches


def test_spark_reads_a_large_file_with_several_tasks_and_every_byte_exact(spark, tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    repeated = CONTENT + b"\n"
    (folder / "big.jsonl").write_bytes(repeated * 40)
    (folder / "small.jsonl.gz").write_bytes(gzip.compress(CONTENT))
    (folder / ".partial.jsonl.tmp").write_bytes(b"not yet")
    (folder / "notes.txt").write_bytes(b"ignored")
    frame = _read_stream(spark, folder, tmp_path / "log", max_split_bytes=str(len(repeated) * 7))
    (rows,) = _run_once(spark, frame, tmp_path / "checkpoint")

    big = sorted((r.source_offset, bytes(r.raw)) for r in rows if r.source_partition.endswith("big.jsonl"))
    expected_big = [(copy * len(repeated) + offset, line) for copy in range(40) for offset, line in EXPECTED]
    assert big == expected_big
    small = sorted((r.source_offset, bytes(r.raw)) for r in rows if r.source_partition.endswith("small.jsonl.gz"))
    assert small == EXPECTED
    assert {r.task for r in rows if r.source_partition.endswith("big.jsonl")} == set(range(6))
    assert len(rows) == len(big) + len(small)


def test_a_rerun_reads_only_new_files(spark, tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "one.jsonl").write_bytes(b"1\n2\n")
    checkpoint, log = tmp_path / "checkpoint", tmp_path / "log"
    first = _run_once(spark, _read_stream(spark, folder, log), checkpoint)
    (folder / "two.jsonl").write_bytes(b"3\n")
    second = _run_once(spark, _read_stream(spark, folder, log), checkpoint)
    third = _run_once(spark, _read_stream(spark, folder, log), checkpoint)
    assert sorted(bytes(r.raw) for batch in first for r in batch) == [b"1", b"2"]
    assert [bytes(r.raw) for batch in second for r in batch] == [b"3"]
    assert [r for batch in third for r in batch] == []


def test_a_run_once_takes_what_had_landed_in_capped_batches_then_stops(tmp_path):
    """Under --once the folder is listed once: the caps split that backlog into batches (as
    Spark's availableNow does with maxFilesPerTrigger), and a file landing later waits."""
    from pipelines.sources.files import FilesStreamReader

    folder = tmp_path / "landing"
    folder.mkdir()
    for name, size in (("a.jsonl", 40), ("b.jsonl", 40), ("c.jsonl", 150), ("d.jsonl", 10), ("e.jsonl", 10)):
        (folder / name).write_bytes(b"x" * (size - 1) + b"\n")
        os.utime(folder / name, ns=(0, {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}[name[0]] * 10**9))
    options = {"path": str(folder), "log_path": str(tmp_path / "log"), "available_now": "true",
               "max_bytes_per_trigger": "100", "max_files_per_trigger": "2"}
    reader = FilesStreamReader(options)
    offsets = [reader.latestOffset()["files"]]
    (folder / "late.jsonl").write_bytes(b"1\n")
    offsets += [reader.latestOffset()["files"] for _ in range(4)]
    # a+b (80 bytes); c alone (150 > 100, but one file is always taken); d+e (the file cap).
    assert offsets == [2, 3, 5, 5, 5]
    batches = [[Path(r.path).name for part in reader.partitions({"files": start}, {"files": end})
                for r in part.ranges] for start, end in zip(offsets, offsets[1:], strict=False) if end > start]
    assert batches == [["c.jsonl"], ["d.jsonl", "e.jsonl"]]

    # The next run (a new reader over the same log) starts from the admitted files and
    # takes the one that landed late.
    rerun = FilesStreamReader(options)
    assert rerun.latestOffset() == {"files": 6}
    assert [Path(r.path).name for part in rerun.partitions({"files": 5}, {"files": 6}) for r in part.ranges] \
        == ["late.jsonl"]


def test_a_run_once_skips_a_file_removed_after_its_start_and_reads_a_replaced_one_as_it_is(tmp_path):
    from pipelines.sources.files import FilesStreamReader

    folder = tmp_path / "landing"
    folder.mkdir()
    for number, name in enumerate(("a.jsonl", "b.jsonl", "c.jsonl")):
        (folder / name).write_bytes(b"1\n")
        os.utime(folder / name, ns=(0, (number + 1) * 10**9))
    reader = FilesStreamReader({"path": str(folder), "log_path": str(tmp_path / "log"), "available_now": "true",
                                "max_files_per_trigger": "1"})
    assert reader.latestOffset() == {"files": 1}
    (folder / "b.jsonl").unlink()
    (folder / "c.jsonl").write_bytes(b"1\n2\n3\n")
    os.utime(folder / "c.jsonl", ns=(0, 3 * 10**9))
    assert [reader.latestOffset() for _ in range(2)] == [{"files": 2}, {"files": 2}]
    (admitted,) = [r for part in reader.partitions({"files": 1}, {"files": 2}) for r in part.ranges]
    assert (Path(admitted.path).name, admitted.end) == ("c.jsonl", 6)


def test_the_admission_log_is_folded_into_snapshots_and_reads_the_same(tmp_path, monkeypatch):
    """Every COMPACT_EVERY entries the log becomes one snapshot; a new reader (a restart)
    sees the same files in the same order, also after a crash that left covered entries."""
    from pipelines.sources import files as files_module
    from pipelines.sources.files import FilesStreamReader

    monkeypatch.setattr(files_module, "COMPACT_EVERY", 3)
    folder, log = tmp_path / "landing", tmp_path / "log"
    folder.mkdir()
    names = [f"f{number:02d}.jsonl" for number in range(8)]
    for number, name in enumerate(names):
        (folder / name).write_bytes(b"1\n")
        os.utime(folder / name, ns=(0, (number + 1) * 10**9))
    options = {"path": str(folder), "log_path": str(log), "max_files_per_trigger": "1"}
    reader = FilesStreamReader(options)
    assert [reader.latestOffset()["files"] for _ in range(8)] == [1, 2, 3, 4, 5, 6, 7, 8]
    # Snapshots at 3 and 6 entries; the second replaced the first; entries 6 and 7 remain.
    assert {path.name for path in log.iterdir()} == {f"{6:020d}.snapshot", f"{6:020d}.json", f"{7:020d}.json"}

    def order(reader) -> list[str]:
        return [Path(r.path).name for part in reader.partitions({"files": 0}, {"files": 8}) for r in part.ranges]

    assert order(FilesStreamReader(options)) == names
    assert FilesStreamReader(options).latestOffset() == {"files": 8}
    # A crash between writing a snapshot and deleting what it covers: an entry it covers
    # is still there, and is skipped.
    (log / f"{2:020d}.json").write_text(json.dumps({"first": 2, "files": [[str(folder / names[2]), 2, 3000]]}))
    assert order(FilesStreamReader(options)) == names


def test_clean_source_delete_removes_files_once_their_batches_commit_and_only_then(tmp_path):
    """As Spark's cleanSource: a file goes when Spark commits the batches through it, a
    file landed again under a read file's name is not the file read and stays, and with
    the default (off) nothing is deleted."""
    from pipelines.sources.files import FilesStreamReader

    folder, log = tmp_path / "landing", tmp_path / "log"
    folder.mkdir()
    names = ["a.jsonl", "b.jsonl", "c.jsonl"]
    for number, name in enumerate(names):
        (folder / name).write_bytes(b"1\n")
        os.utime(folder / name, ns=(0, (number + 1) * 10**9))
    options = {"path": str(folder), "log_path": str(log), "max_files_per_trigger": "2", "clean_source": "delete",
               "stream": "events"}
    reader = FilesStreamReader(options)
    assert reader.latestOffset() == {"files": 2, "stream": "events"}
    assert sorted(path.name for path in folder.iterdir()) == names, "nothing goes before a commit"
    reader.commit({"files": 2, "stream": "events"})
    assert sorted(path.name for path in folder.iterdir()) == ["c.jsonl"]

    restarted = FilesStreamReader(options)
    assert restarted.latestOffset() == {"files": 3, "stream": "events"}
    (folder / "c.jsonl").write_bytes(b"a new file under the name of one admitted, not yet deleted\n")
    restarted.commit({"files": 2, "stream": "events"})  # committed again after a restart: nothing to do
    restarted.commit({"files": 3, "stream": "events"})
    assert sorted(path.name for path in folder.iterdir()) == ["c.jsonl"]

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "a.jsonl").write_bytes(b"1\n")
    untouched = FilesStreamReader({"path": str(kept), "log_path": str(tmp_path / "log2")})
    assert untouched.latestOffset() == {"files": 1}
    untouched.commit({"files": 1})
    assert [path.name for path in kept.iterdir()] == ["a.jsonl"]


def test_clean_source_delete_catches_up_at_start_with_what_the_last_committed_batch_read(tmp_path):
    """Spark commits a batch's offsets to its source only when it plans the next batch: a
    job that stopped after its last batch has never been told. The next start reads the
    checkpoint's offset log and deletes what its last committed batch read, this stream's."""
    from pipelines.sources.files import FilesStreamReader

    folder, checkpoint = tmp_path / "landing", tmp_path / "checkpoint"
    folder.mkdir()
    for number, name in enumerate(("x.jsonl", "y.jsonl", "z.jsonl")):
        (folder / name).write_bytes(b"1\n")
        os.utime(folder / name, ns=(0, (number + 1) * 10**9))
    options = {"path": str(folder), "log_path": str(checkpoint / "files_source" / "events"),
               "max_files_per_trigger": "2", "clean_source": "delete", "stream": "events",
               "checkpoint": str(checkpoint)}
    assert FilesStreamReader(options).latestOffset() == {"files": 2, "stream": "events"}
    # Spark ran and committed batch 0 over those two files, then the job stopped.
    (checkpoint / "offsets").mkdir()
    (checkpoint / "commits").mkdir()
    (checkpoint / "offsets" / "0").write_text('v1\n{"batchWatermarkMs":0}\n{"files": 7, "stream": "crm"}\n'
                                             '{"files": 2, "stream": "events"}\n')
    (checkpoint / "commits" / "0").write_text('v1\n{"nextBatchWatermarkMs":0}\n')
    # A batch planned but not committed: its files may be read again, and stay.
    (checkpoint / "offsets" / "1").write_text('v1\n{"batchWatermarkMs":0}\n{"files": 7, "stream": "crm"}\n'
                                             '{"files": 3, "stream": "events"}\n')
    restarted = FilesStreamReader(options)
    assert restarted.latestOffset() == {"files": 3, "stream": "events"}
    assert sorted(path.name for path in folder.iterdir()) == ["z.jsonl"]
