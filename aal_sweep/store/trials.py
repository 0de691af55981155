"""RESULTS/trials/: per-trial inbox files and compacted segments, recorded in a manifest.

    trials/<trial_id>.parquet          inbox: one trial's rows, written whole by the trial (or the driver)
    trials/segment-<gen>-<id>.parquet  many trials' rows, sorted by trial_id, written by compaction
    trials/_manifest.json              {"generation": g, "segments": [names]}: the segments that count
    trials/.quarantine/                damaged files moved aside by `run`
    trials/.<name>.<pid>-<id>.tmp      a file being written (local folders only)

Names starting with "_" or "." are skipped by pyarrow's and pandas' dataset discovery, so
`pandas.read_parquet("RESULTS/trials")` reads inbox files and segments only.

Compaction (the driver only, holding the lease): write a new segment from the inbox's finished trials,
replace the manifest, then delete the merged inbox files (and segments a merge replaced). Readers take the
manifest's segments plus the inbox, one version per trial_id (inbox first, then newer segments), so a
compaction killed at any step loses nothing and duplicates nothing for them: before the manifest is
replaced the new segment is an orphan they ignore; after it, a leftover inbox file duplicates rows that are
identical. The next compaction (`cleanup`) deletes orphans and leftovers, after which a glob reader sees
every row exactly once again. Failed trials stay in the inbox: a retry then replaces their file, so a
trial never has a failed and an ok version in two files.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from aal_sweep.store.layout import MANIFEST, QUARANTINE, TRIALS_DIR
from aal_sweep.store.location import Location
from aal_sweep.store.schema import DICTIONARY, IDENTITY, SCHEMA, DamagedFile, check_schema, conform, rows_to_table

log = logging.getLogger("aal_sweep.store")

SEGMENT_PREFIX = "segment-"
MERGE_ABOVE = 8  # more segments than this are merged into one
ROW_GROUP = 65536
STALE_TMP_S = 3600  # a temporary file this old belongs to a dead writer
RETRIES = 100  # reads that a finishing compaction may send back to a new snapshot


class Snapshot:
    """One consistent view of trials/: the manifest's segments and the inbox files beside them."""

    def __init__(self, generation: int, segments: list[str], inbox: list[str], orphans: list[str],
                 others: list[str], manifest_ok: bool):
        self.generation, self.segments, self.inbox = generation, segments, inbox
        self.orphans, self.others, self.manifest_ok = orphans, others, manifest_ok


class TrialFiles:
    def __init__(self, loc: Location):
        self.loc = loc
        self._segment_cache: dict[tuple[str, tuple | None], pa.Table] = {}  # segments never change
        self._warned: set[str] = set()

    # ---- writing -----------------------------------------------------------------------------------

    def write(self, rows: list[dict]) -> str:
        """Write one trial's rows as its inbox file (atomically); return the file's relative path."""
        table = rows_to_table(rows)
        rel = inbox_path(rows[0]["trial_id"])
        self.loc.write_bytes(rel, parquet_bytes(table))
        return rel

    # ---- what is there -----------------------------------------------------------------------------

    def _manifest(self) -> tuple[int, list[str] | None]:
        """(generation, segment names), or (-1, None) when the manifest is unreadable."""
        try:
            doc = json.loads(self.loc.read_bytes(MANIFEST))
            return int(doc["generation"]), [str(s) for s in doc["segments"]]
        except FileNotFoundError:
            return 0, []
        except (ValueError, KeyError, TypeError, OSError) as e:
            self._warn(MANIFEST, f"{self.loc.show(MANIFEST)} is unreadable ({e}); reading every segment file")
            return -1, None

    def snapshot(self) -> Snapshot:
        """Manifest, listing, manifest again: equal generations mean no compaction finished in between,
        so every inbox file a listed segment does not hold was in the listing."""
        for attempt in range(RETRIES):
            gen, segments = self._manifest()
            entries = self.loc.list(TRIALS_DIR)
            gen2, _ = self._manifest()
            if gen2 == gen:
                break
            _pause(attempt)
        else:
            raise OSError(f"{self.loc.show(TRIALS_DIR)}: its manifest changed during each of {RETRIES} listings")
        files = [e for e in entries if e.type == pafs.FileType.File]
        names = [e.base_name for e in files if not e.base_name.startswith(("_", "."))]
        seg_files = {n for n in names if n.startswith(SEGMENT_PREFIX) and n.endswith(".parquet")}
        manifest_ok = segments is not None
        if segments is None:  # unreadable manifest: every segment file counts; dedupe keeps one version
            segments = sorted(seg_files)
        listed = [s for s in segments if s in seg_files]
        inbox = sorted(n for n in names if n.endswith(".parquet") and n not in seg_files)
        others = sorted(n for n in names if not n.endswith(".parquet"))
        orphans = sorted(seg_files - set(segments))
        return Snapshot(gen, listed, inbox, orphans, others, manifest_ok)

    # ---- reading -----------------------------------------------------------------------------------

    def read(self, columns: list[str] | None = None) -> tuple[pa.Table, list[tuple[str, str]]]:
        """Every stored trial once, as a table of SCHEMA's `columns` (trial_id always included);
        and the damaged files skipped, as (relative path, what is wrong)."""
        cols = None if columns is None else list(dict.fromkeys(["trial_id", *columns]))
        for attempt in range(RETRIES):
            try:
                return self._read_snapshot(self.snapshot(), cols)
            except _Moved:  # a compaction finished meanwhile: read the new state
                _pause(attempt)
        raise OSError(f"{self.loc.show(TRIALS_DIR)}: compactions kept moving files during {RETRIES} reads")

    def _read_snapshot(self, snap: Snapshot, cols) -> tuple[pa.Table, list[tuple[str, str]]]:
        damaged: list[tuple[str, str]] = [(f"{TRIALS_DIR}/{n}", "not a Parquet file name (*.parquet)")
                                          for n in snap.others]
        tables: list[pa.Table] = []  # in precedence order: inbox, then segments newest first
        with ThreadPoolExecutor(max_workers=16 if not self.loc.local else 4) as pool:
            inbox = list(pool.map(lambda n: self._read_inbox(n, cols), snap.inbox))
        for name, (table, problem) in zip(snap.inbox, inbox):
            if problem == "gone":
                if self._manifest()[0] != snap.generation:
                    raise _Moved()
                continue  # merged into a segment we read, or moved aside
            if problem:
                damaged.append((f"{TRIALS_DIR}/{name}", problem))
            else:
                tables.append(table)
        n_loose = len(tables)
        for name in sorted(snap.segments, key=_generation, reverse=True):
            table, problem = self._read_segment(name, cols)
            if problem == "gone":
                raise _Moved()
            if problem:
                damaged.append((f"{TRIALS_DIR}/{name}", problem))
            else:
                tables.append(table)
        for path, problem in damaged:
            self._warn(path, f"skipping {self.loc.show(path)}: {problem} (`aal-sweep run` moves it to "
                             f"{QUARANTINE}/ and reruns its trial)")
        if snap.manifest_ok:  # the manifest's segments are disjoint: only the inbox can repeat a trial
            return _inbox_first(tables[:n_loose], tables[n_loose:], cols), damaged
        return _one_version_per_trial(tables, cols), damaged

    def _read_inbox(self, name: str, cols) -> tuple[pa.Table | None, str | None]:
        rel = f"{TRIALS_DIR}/{name}"
        try:
            table = conform(_read_parquet(self.loc, rel, cols), cols)
        except FileNotFoundError:
            return None, "gone"
        except DamagedFile as e:
            return None, str(e)
        ids = pc.unique(table.column("trial_id")).to_pylist()
        if ids != [name[:-len(".parquet")]]:
            return None, f"holds rows of trial(s) {', '.join(map(str, ids[:3]))}, not of {name[:-8]}"
        return table, None

    def _read_segment(self, name: str, cols) -> tuple[pa.Table | None, str | None]:
        key = (name, None if cols is None else tuple(cols))
        if key in self._segment_cache:
            return self._segment_cache[key], None
        try:
            table = conform(_read_parquet(self.loc, f"{TRIALS_DIR}/{name}", cols), cols)
        except FileNotFoundError:
            return None, "gone"
        except DamagedFile as e:
            return None, str(e)
        if cols is not None:  # the full width (val_correct, test_correct) is too big to keep
            self._segment_cache[key] = table
        return table, None

    def lookup(self, trial_id: str) -> pa.Table | None:
        """One trial's rows (trial_id, status), or None: its inbox file first, then the segments."""
        cols = ["trial_id", "status"]
        for _ in range(5):
            gen, segments = self._manifest()
            table, problem = self._read_inbox(f"{trial_id}.parquet", cols)
            if table is not None:
                return table
            if problem not in ("gone", None):
                return None
            found, moved = None, False
            for name in sorted(segments or [], key=_generation, reverse=True):
                try:
                    t = pq.read_table(self.loc.path(f"{TRIALS_DIR}/{name}"), filesystem=self.loc.fs, columns=cols,
                                      filters=[("trial_id", "==", trial_id)])
                except FileNotFoundError:
                    moved = True
                    break
                except (OSError, pa.ArrowException):
                    continue
                if t.num_rows:
                    found = t
                    break
            if not moved:
                return found
        return None

    # ---- the driver's upkeep -----------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Remove what killed writers and compactions left: orphan segments, stale temporary files, inbox
        files whose trial a segment already holds. Returns what was removed (relative paths)."""
        snap = self.snapshot()
        removed = [f"{TRIALS_DIR}/{n}" for n in snap.orphans] if snap.manifest_ok else []
        now = time.time()
        for e in self.loc.list(TRIALS_DIR):
            if e.type == pafs.FileType.File and e.base_name.startswith(".") and e.base_name.endswith(".tmp") \
                    and e.mtime is not None and now - e.mtime.timestamp() > STALE_TMP_S:
                removed.append(f"{TRIALS_DIR}/{e.base_name}")
        if snap.inbox and snap.segments:
            in_segments = set()
            for name in snap.segments:
                table, problem = self._read_segment(name, ["trial_id", "status"])
                if table is not None:
                    in_segments |= set(pc.unique(table.column("trial_id")).to_pylist())
            removed += [f"{TRIALS_DIR}/{n}" for n in snap.inbox if n[:-len(".parquet")] in in_segments]
        for rel in removed:
            self.loc.delete(rel)
        return removed

    def quarantine(self, damaged: list[tuple[str, str]]) -> list[str]:
        """Move damaged files to trials/.quarantine/ (their trials then count as not done)."""
        moved = []
        gen, segments = self._manifest()
        for rel, _problem in damaged:
            name = rel.rsplit("/", 1)[-1]
            target = f"{QUARANTINE}/{time.strftime('%Y%m%dT%H%M%S')}-{name}"
            try:
                self.loc.move(rel, target)
            except FileNotFoundError:
                continue
            moved.append(target)
            if segments is not None and name in segments:
                segments.remove(name)
                self._write_manifest(gen + 1, segments)
                gen += 1
        return moved

    def compact(self, progress=None) -> int:
        """Merge the inbox's finished trials into a new segment; returns how many trials were merged.
        `progress(done, total)` follows the reading of the inbox files (the slow part of a large store)."""
        snap = self.snapshot()
        # a lost manifest: merge every segment file there is into one, so that segments stay disjoint
        merge_all = not snap.manifest_ok
        generation = max([snap.generation, 0] + [_generation(n) for n in snap.segments]) + 1
        held: set[str] = set()
        for name in snap.segments:
            table, _ = self._read_segment(name, ["trial_id", "status"])
            if table is not None:
                held |= set(pc.unique(table.column("trial_id")).to_pylist())
        merged_names, tables = [], []
        progress = progress if snap.inbox else None  # nothing to read: no progress to show
        for k, name in enumerate(snap.inbox):
            if progress:
                progress(k, len(snap.inbox))
            tid = name[:-len(".parquet")]
            table, problem = self._read_inbox(name, None)
            if table is None:
                continue  # damaged (quarantined by `run`) or gone
            if tid in held:
                merged_names.append(name)  # a leftover of a killed compaction: the segment has it
            elif pc.all(pc.equal(table.column("status"), "ok")).as_py():
                merged_names.append(name)
                tables.append(table)
        if progress:
            progress(len(snap.inbox), len(snap.inbox))
        n_merged = len(tables)
        replaced = []
        segments = list(snap.segments)
        if merge_all or len(segments) + bool(tables) > MERGE_ABOVE:
            full = [self._read_segment(n, None)[0] for n in sorted(segments, key=_generation, reverse=True)]
            tables = tables + [t for t in full if t is not None]
            replaced, segments = segments, []
        if tables:
            self._add_segment(generation, segments, _one_version_per_trial(tables, None))
        elif merge_all:
            self._write_manifest(generation, [])
        for name in merged_names + replaced:
            self.loc.delete(f"{TRIALS_DIR}/{name}")
        for name in replaced:
            self._segment_cache = {k: v for k, v in self._segment_cache.items() if k[0] != name}
        return n_merged

    def import_rows(self, table: pa.Table) -> str:
        """Store many trials' rows (a table of SCHEMA, one version per trial_id) as one new segment: the
        driver only, e.g. to import another store's trials, or to build a large store at once."""
        snap = self.snapshot()
        if not snap.manifest_ok:
            raise ValueError("the manifest is unreadable: run a compaction first")
        table = conform(table)
        held = [self._read_segment(n, ["trial_id", "status"])[0] for n in snap.segments]
        held = [t.column("trial_id") for t in held if t is not None]
        if held:  # segments stay disjoint: readers rely on it
            ids = pa.chunked_array([c for col in held for c in col.chunks], pa.string()).combine_chunks()
            if pc.any(pc.is_in(table.column("trial_id"), value_set=ids)).as_py():
                raise ValueError("import_rows: some of these trials are stored already")
        return self._add_segment(snap.generation + 1, snap.segments, table)

    def _add_segment(self, generation: int, segments: list[str], table: pa.Table) -> str:
        """Write `table` sorted by trial_id as a segment, then the manifest naming it after `segments`."""
        name = f"{SEGMENT_PREFIX}{generation:08d}-{uuid.uuid4().hex[:8]}.parquet"
        self.loc.write_bytes(f"{TRIALS_DIR}/{name}", parquet_bytes(table.sort_by("trial_id")))
        self._write_manifest(generation, segments + [name])
        return name

    def _write_manifest(self, generation: int, segments: list[str]) -> None:
        doc = {"generation": generation, "segments": segments, "written_at": time.time()}
        self.loc.write_bytes(MANIFEST, json.dumps(doc, indent=1).encode())

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


def _pause(attempt: int) -> None:
    time.sleep(min(0.005 * (attempt + 1), 0.2))


class _Moved(Exception):
    """A file of the snapshot went away because a compaction finished: take a new snapshot."""


def inbox_path(trial_id: str) -> str:
    return f"{TRIALS_DIR}/{trial_id}.parquet"


def _generation(name: str) -> int:
    try:
        return int(name[len(SEGMENT_PREFIX):].split("-", 1)[0])
    except ValueError:
        return -1


BIT_COLUMNS = ("val_correct", "test_correct")  # packed per-image bits: ~2.5 KB a row for CelebA


def parquet_bytes(table: pa.Table) -> bytes:
    """A Parquet file of `table`. The per-image bits are written plain: no dictionary (every value is
    distinct), no compression and no min / max statistics (they do not shrink packed bits much and cost
    most of the read: a 1,000-attribute sweep's 2.5 GB of validation bits reads in ~2 s plain, ~6 s with
    snappy and a dictionary attempt, docs/benchmarks.md). Every other column as pyarrow writes it."""
    names = table.column_names
    bits = [c for c in BIT_COLUMNS if c in names]
    other = [c for c in names if c not in bits]
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=ROW_GROUP, use_dictionary=other, write_statistics=other,
                   compression={c: "none" if c in bits else "snappy" for c in names},
                   column_encoding={c: "PLAIN" for c in bits} or None)
    return sink.getvalue().to_pybytes()


def _read_parquet(loc: Location, rel: str, cols=None) -> pa.Table:
    """A Parquet file's table (only `cols` that exist in it), or DamagedFile / FileNotFoundError."""
    try:
        with loc.fs.open_input_file(loc.path(rel)) as f:
            pf = pq.ParquetFile(f)
            check_schema(pf.schema_arrow)  # the whole file's columns, whatever is read
            have = pf.schema_arrow.names
            if cols is not None:  # narrow reads (the queries) keep low-cardinality columns dictionary-encoded
                pf = pq.ParquetFile(f, metadata=pf.metadata,
                                    read_dictionary=[c for c in DICTIONARY if c in cols and c in have])
            # the identifying columns always: conform checks them, whatever the caller asked for
            wanted = None if cols is None else list(dict.fromkeys([*IDENTITY, *cols]))
            return pf.read(columns=None if wanted is None else [c for c in wanted if c in have])
    except (FileNotFoundError, DamagedFile):
        raise
    except (pa.ArrowException, OSError, ValueError) as e:
        if isinstance(e, OSError) and "not found" in str(e).lower():
            raise FileNotFoundError(rel) from None
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DamagedFile(f"not a readable Parquet file ({first[:160]})") from None


def _inbox_first(inbox: list[pa.Table], segments: list[pa.Table], cols) -> pa.Table:
    """Inbox tables (one trial each, distinct) and disjoint segments: drop segment rows of trials the
    inbox holds again (a killed compaction's leftovers), then concatenate."""
    if inbox and segments:
        ids = pa.concat_arrays([c for t in inbox for c in t.column("trial_id").chunks])
        segments = [t.filter(pc.invert(pc.is_in(t.column("trial_id"), value_set=ids))) for t in segments]
    tables = inbox + segments
    if not tables:
        return (SCHEMA if cols is None else pa.schema([SCHEMA.field(c) for c in cols])).empty_table()
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


def _one_version_per_trial(tables: list[pa.Table], cols) -> pa.Table:
    """Concatenate tables given in precedence order, keeping each trial_id's rows from the first table
    that has it. Compaction keeps segments disjoint, so this is cheap: the ids of every table but the last
    (usually the big, oldest segment) filter the tables after it."""
    schema = SCHEMA if cols is None else pa.schema([SCHEMA.field(c) for c in cols])
    if not tables:
        return schema.empty_table()
    if len(tables) == 1:
        return tables[0]
    kept, seen = [], []
    for k, t in enumerate(tables):
        if seen:
            t = t.filter(pc.invert(pc.is_in(t.column("trial_id"), value_set=pa.concat_arrays(seen))))
        kept.append(t)
        if k < len(tables) - 1:
            seen += t.column("trial_id").chunks
    return pa.concat_tables(kept, promote_options="permissive")
