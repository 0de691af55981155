"""RESULTS/trials/: per-trial inbox files and compacted segments, recorded in a manifest.

    trials/<trial_id>.parquet          inbox: one trial's rows, written whole by the trial (or the driver)
    trials/segment-<gen>-<id>.parquet  many trials' rows, sorted by trial_id, written by compaction
    trials/_manifest.json              {"generation": g, "segments": [names], "trials": {name: n}}: the
                                       segments that count, and how many trials each holds
    trials/_ids/<segment name>         the segment's trial ids (names what a lost segment held)
    trials/.merged/<gen>/              what the compaction of generation <gen> merged (one generation kept)
    trials/.quarantine/                damaged files moved aside by `run`
    trials/.<name>.<pid>-<id>.tmp      a file being written (local folders only)

Names starting with "_" or "." are skipped by pyarrow's and pandas' dataset discovery, so
`pandas.read_parquet("RESULTS/trials")` reads inbox files and segments only.

Compaction (the driver only, holding the lease): write a new segment from the inbox's finished trials,
read it back (row count and trial ids must equal what was written), write its ids file, replace the
manifest, then move the merged inbox files (and segments a merge replaced) to .merged/<gen>/ and delete
older generations there. Readers take the manifest's segments plus the inbox, one version per trial_id
(inbox first, then newer segments), so a compaction killed at any step loses nothing and duplicates
nothing for them: before the manifest is replaced the new segment is an orphan they ignore; after it, a
leftover inbox file duplicates rows that are identical. The next compaction (`cleanup`) deletes orphans and
leftovers, after which a glob reader sees every row exactly once again. Failed trials stay in the inbox: a
retry then replaces their file, so a trial never has a failed and an ok version in two files.

What survives a damaged or missing segment. A segment is written once and verified before anything it
merged goes, so a torn or corrupted write costs nothing (the inputs stay; the next compaction tries
again). Damage later (a disk, a copy that dropped or truncated a file) is repaired by `run` (`repair`)
from .merged/: the newest compaction's inputs stay there until the next compaction has verified its own
segment, so the segment written last can always be rebuilt, and so can any segment whose trials were
merged by it. Why the inputs and not the previous segment: segments are disjoint and appended, so the
previous segment is not a copy of the new one; only the inputs are. The extra space is bounded by one
compaction's inputs: after an append, at most COMPACT_EVERY (the driver's) inbox files; after a merge
(more than MERGE_ABOVE segments), the replaced segments, i.e. about one copy of the store, until the next
compaction. Older segments have no copy (that would double the store for good): a damaged one costs its
trials, which `run` names from the segment's ids file and trains again. Counts are in the manifest, so
every reader can say how many trials a missing segment held ("an unknown number" for a manifest written
before counts were recorded).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from aal_sweep.errors import AalError
from aal_sweep.store.layout import MANIFEST, MERGED, QUARANTINE, SEGMENT_IDS, TRIALS_DIR
from aal_sweep.store.location import Location
from aal_sweep.store.problems import Problem, Repair
from aal_sweep.store.schema import DICTIONARY, IDENTITY, SCHEMA, DamagedFile, check_schema, conform, rows_to_table

log = logging.getLogger("aal_sweep.store")

SEGMENT_PREFIX = "segment-"
MERGE_ABOVE = 8  # more segments than this are merged into one
ROW_GROUP = 65536
STALE_TMP_S = 3600  # a temporary file this old belongs to a dead writer
RETRIES = 100  # reads that a finishing compaction may send back to a new snapshot


class Snapshot:
    """One consistent view of trials/: the manifest's segments and the inbox files beside them."""

    def __init__(
        self,
        generation: int,
        segments: list[str],
        inbox: list[str],
        orphans: list[str],
        others: list[str],
        manifest_ok: bool,
        missing: list[str] | None = None,
        counts: dict[str, int] | None = None,
    ):
        self.generation, self.segments, self.inbox = generation, segments, inbox
        self.orphans, self.others, self.manifest_ok = orphans, others, manifest_ok
        self.missing = missing or []  # named by the manifest, not there
        self.counts = counts or {}  # segment -> trials it holds, as the manifest records


class SegmentNotVerified(AalError):
    """A segment just written does not read back as what was written."""


def _no_guard() -> None:
    return None


class TrialFiles:
    def __init__(self, loc: Location):
        self.loc = loc
        self._segment_cache: dict[tuple[str, tuple | None], pa.Table] = {}  # segments never change
        self._warned: set[str] = set()
        # called before every write of a shared file (the store sets it to its lease's check)
        self.guard: Callable[[], None] = _no_guard

    # ---- writing -----------------------------------------------------------------------------------

    def write(self, rows: list[dict]) -> str:
        """Write one trial's rows as its inbox file (atomically); return the file's relative path."""
        table = rows_to_table(rows)
        rel = inbox_path(rows[0]["trial_id"])
        self.loc.write_bytes(rel, parquet_bytes(table))
        return rel

    # ---- what is there -----------------------------------------------------------------------------

    def _manifest(self) -> tuple[int, list[str] | None, dict[str, int]]:
        """(generation, segment names, trials per segment), or (-1, None, {}) when the manifest is damaged.
        Storage that cannot be read raises OSError: that is not a damaged manifest, and the caller says so."""
        try:
            raw = self.loc.read_bytes(MANIFEST)
        except FileNotFoundError:
            return 0, [], {}
        try:
            doc = json.loads(raw)
            counts = doc.get("trials") or {}
            counts = {str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else {}
            return int(doc["generation"]), [str(s) for s in doc["segments"]], counts
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self._warn(MANIFEST, f"{self.loc.show(MANIFEST)} is unreadable ({e}); reading every segment file")
            return -1, None, {}

    def snapshot(self) -> Snapshot:
        """Manifest, listing, manifest again: equal generations mean no compaction finished in between,
        so every inbox file a listed segment does not hold was in the listing, and a segment the manifest
        names that the listing lacks is missing (deleted, or lost in a copy), not replaced."""
        for attempt in range(RETRIES):
            gen, segments, counts = self._manifest()
            entries = self.loc.list(TRIALS_DIR)
            gen2, _, _ = self._manifest()
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
        missing = [s for s in segments if s not in seg_files]
        inbox = sorted(n for n in names if n.endswith(".parquet") and n not in seg_files)
        others = sorted(n for n in names if not n.endswith(".parquet"))
        orphans = sorted(seg_files - set(segments))
        return Snapshot(gen, listed, inbox, orphans, others, manifest_ok, missing, counts)

    # ---- reading -----------------------------------------------------------------------------------

    def read(self, columns: list[str] | None = None, warn: bool = True) -> tuple[pa.Table, list[Problem]]:
        """Every stored trial once, as a table of SCHEMA's `columns` (trial_id always included); and what
        was skipped: damaged files, and segments the manifest names that are gone (`warn`: log each, once)."""
        cols = None if columns is None else list(dict.fromkeys(["trial_id", *columns]))
        for attempt in range(RETRIES):
            try:
                table, problems = self._read_snapshot(self.snapshot(), cols)
            except _Moved:  # a compaction finished meanwhile: read the new state
                _pause(attempt)
                continue
            if warn:
                for p in problems:
                    self._warn(p.rel, p.line())
            return table, problems
        raise OSError(f"{self.loc.show(TRIALS_DIR)}: compactions kept moving files during {RETRIES} reads")

    def _problem(self, rel: str, why: str, snap: Snapshot | None = None) -> Problem:
        name = rel.rsplit("/", 1)[-1]
        segment = snap is not None and (name in snap.segments or name in snap.missing)
        return Problem(self.loc.show(rel), why, segment, snap.counts.get(name) if segment else None, rel=rel)

    def _read_snapshot(self, snap: Snapshot, cols) -> tuple[pa.Table, list[Problem]]:
        damaged: list[Problem] = [
            self._problem(f"{TRIALS_DIR}/{n}", "not a Parquet file name (*.parquet)") for n in snap.others
        ]
        tables: list[pa.Table] = []  # in precedence order: inbox, then segments newest first
        with ThreadPoolExecutor(max_workers=16 if not self.loc.local else 4) as pool:
            inbox = list(pool.map(lambda n: self._read_inbox(n, cols), snap.inbox))
        for name, (table, problem) in zip(snap.inbox, inbox):
            if problem == "gone":
                if self._manifest()[0] != snap.generation:
                    raise _Moved()
                continue  # merged into a segment we read, or moved aside
            if problem:
                damaged.append(self._problem(f"{TRIALS_DIR}/{name}", problem))
            else:
                tables.append(table)
        n_loose = len(tables)
        for name in sorted(snap.segments, key=_generation, reverse=True):
            table, problem = self._read_segment(name, cols)
            if problem == "gone":
                raise _Moved()
            if problem:
                damaged.append(self._problem(f"{TRIALS_DIR}/{name}", problem, snap))
            else:
                tables.append(table)
        damaged += [self._problem(f"{TRIALS_DIR}/{name}", "missing", snap) for name in snap.missing]
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
        if ids != [name[: -len(".parquet")]]:
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
            gen, segments, _counts = self._manifest()
            table, problem = self._read_inbox(f"{trial_id}.parquet", cols)
            if table is not None:
                return table
            if problem not in ("gone", None):
                return None
            found, moved = None, False
            for name in sorted(segments or [], key=_generation, reverse=True):
                try:
                    t = pq.read_table(
                        self.loc.path(f"{TRIALS_DIR}/{name}"),
                        filesystem=self.loc.fs,
                        columns=cols,
                        filters=[("trial_id", "==", trial_id)],
                    )
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

    # ---- the driver's upkeep (each checks the lease first: self.guard) -----------------------------------

    def cleanup(self) -> list[str]:
        """Remove what killed writers and compactions left: orphan segments and their ids files, stale
        temporary files, inbox files whose trial a segment already holds. Returns what was removed."""
        self.guard()
        snap = self.snapshot()
        removed = [f"{TRIALS_DIR}/{n}" for n in snap.orphans] if snap.manifest_ok else []
        now = time.time()
        for folder in (TRIALS_DIR, SEGMENT_IDS):
            for e in self.loc.list(folder):
                if (
                    e.type == pafs.FileType.File
                    and e.base_name.startswith(".")
                    and e.base_name.endswith(".tmp")
                    and e.mtime is not None
                    and now - e.mtime.timestamp() > STALE_TMP_S
                ):
                    removed.append(f"{folder}/{e.base_name}")
        if snap.manifest_ok:  # ids of segments no manifest names (a missing one's stay: repair names them)
            named = set(snap.segments) | set(snap.missing)
            removed += [
                f"{SEGMENT_IDS}/{e.base_name}"
                for e in self.loc.list(SEGMENT_IDS)
                if e.type == pafs.FileType.File and not e.base_name.startswith(".") and e.base_name not in named
            ]
        if snap.inbox and snap.segments:
            in_segments = set()
            for name in snap.segments:
                table, problem = self._read_segment(name, ["trial_id", "status"])
                if table is not None:
                    in_segments |= set(pc.unique(table.column("trial_id")).to_pylist())
            removed += [f"{TRIALS_DIR}/{n}" for n in snap.inbox if n[: -len(".parquet")] in in_segments]
        for rel in removed:
            self.loc.delete(rel)
        return removed

    def quarantine(self, damaged: list[Problem]) -> list[tuple[Problem, str]]:
        """Move damaged files to trials/.quarantine/ (their trials then count as not done); returns each
        with where it went. Segments are `repair`'s, which runs first where the manifest is readable;
        missing files have nothing to move."""
        moved = []
        gen, segments, counts = self._manifest()
        for problem in damaged:
            if problem.missing:
                continue
            self.guard()
            name = problem.rel.rsplit("/", 1)[-1]
            target = f"{QUARANTINE}/{time.strftime('%Y%m%dT%H%M%S')}-{name}"
            if segments is not None and name in segments:  # out of the manifest first: never "missing"
                segments.remove(name)
                gen += 1
                self._write_manifest(gen, segments, counts)
            try:
                self.loc.move(problem.rel, target)
            except FileNotFoundError:
                continue
            moved.append((problem, target))
        return moved

    def repair(self) -> list[Repair]:
        """Rebuild each segment the manifest names that is missing or unreadable from what .merged/ still
        holds, as one new verified segment; move the damaged files to .quarantine/; return what was
        recovered and what is lost (to be trained again) per segment."""
        snap = self.snapshot()
        if not snap.manifest_ok:
            return []  # no manifest to name segments: compaction merges every readable segment file
        bad: list[Problem] = [self._problem(f"{TRIALS_DIR}/{n}", "missing", snap) for n in snap.missing]
        live: set[str] = {n[: -len(".parquet")] for n in snap.inbox}
        for name in snap.segments:
            table, problem = self._read_segment(name, ["trial_id", "status"])
            if problem:
                bad.append(self._problem(f"{TRIALS_DIR}/{name}", problem, snap))
            else:
                live |= set(pc.unique(table.column("trial_id")).to_pylist())
        if not bad:
            return []
        self.guard()
        sources = self._merged()
        recovered_tables: list[pa.Table] = []
        found: list[tuple[Problem, list[str], list[str] | None]] = []
        for problem in bad:
            name = problem.rel.rsplit("/", 1)[-1]
            expected = self._segment_ids(name)
            if expected is None:  # not recorded: its own compaction's inputs are what it held
                candidates = [t for gen, t in sources if gen == _generation(name)]
            else:
                candidates = [
                    t.filter(pc.is_in(t.column("trial_id"), value_set=pa.array(sorted(expected), pa.string())))
                    for _, t in sources
                ]
            table = _one_version_per_trial([t for t in candidates if t.num_rows], None)
            keep = pc.invert(pc.is_in(table.column("trial_id"), value_set=pa.array(sorted(live), pa.string())))
            table = table.filter(keep)  # stored elsewhere (inbox, another segment): not ours to add again
            ids = sorted(pc.unique(table.column("trial_id")).to_pylist())
            live |= set(ids)
            recovered_tables.append(table)
            lost = None if expected is None else sorted(expected - live)
            found.append((problem, ids, lost))
        rebuilt = None
        segments = [s for s in snap.segments if s not in {p.rel.rsplit("/", 1)[-1] for p in bad}]
        counts = {s: c for s, c in snap.counts.items() if s in segments}
        generation = max([snap.generation, 0] + [_generation(n) for n in snap.segments + snap.missing]) + 1
        table = _one_version_per_trial([t for t in recovered_tables if t.num_rows], None)
        if table.num_rows:
            rebuilt = self._add_segment(generation, segments, table, counts)
        else:
            self._write_manifest(generation, segments, counts)
        repairs = []
        for problem, ids, lost in found:
            moved_to = None
            if not problem.missing:
                moved_to = f"{QUARANTINE}/{time.strftime('%Y%m%dT%H%M%S')}-{problem.rel.rsplit('/', 1)[-1]}"
                try:
                    self.loc.move(problem.rel, moved_to)
                except FileNotFoundError:
                    moved_to = None
            self.loc.delete(f"{SEGMENT_IDS}/{problem.rel.rsplit('/', 1)[-1]}")
            repairs.append(
                Repair(
                    problem,
                    ids,
                    lost,
                    moved_to and self.loc.show(moved_to),
                    rebuilt and self.loc.show(f"{TRIALS_DIR}/{rebuilt}"),
                )
            )
        return repairs

    def _merged(self) -> list[tuple[int, pa.Table]]:
        """Every readable file under .merged/, full width, with the generation of the compaction that merged
        it (one generation, usually: older ones are deleted)."""
        out = []
        for folder in self.loc.list(MERGED):
            if folder.type != pafs.FileType.Directory or not folder.base_name.isdigit():
                continue
            for e in self.loc.list(f"{MERGED}/{folder.base_name}"):
                if e.type != pafs.FileType.File or not e.base_name.endswith(".parquet"):
                    continue
                try:
                    table = conform(_read_parquet(self.loc, f"{MERGED}/{folder.base_name}/{e.base_name}"))
                except (FileNotFoundError, DamagedFile):
                    continue
                out.append((int(folder.base_name), table))
        return out

    def _segment_ids(self, name: str) -> set[str] | None:
        """The trial ids a segment held, from its ids file (None: not recorded, or unreadable)."""
        try:
            return set(_read_ids(self.loc, f"{SEGMENT_IDS}/{name}").to_pylist())
        except (FileNotFoundError, DamagedFile):
            return None

    def compact(self, progress=None) -> int:
        """Merge the inbox's finished trials into a new segment; returns how many trials were merged.
        `progress(done, total)` follows the reading of the inbox files (the slow part of a large store)."""
        self.guard()
        snap = self.snapshot()
        # a lost manifest: merge every segment file there is into one, so that segments stay disjoint
        merge_all = not snap.manifest_ok
        generation = max([snap.generation, 0] + [_generation(n) for n in snap.segments + snap.missing]) + 1
        held: set[str] = set()
        counts = dict(snap.counts)
        for name in snap.segments:
            table, _ = self._read_segment(name, ["trial_id", "status"])
            if table is not None:
                ids = pc.unique(table.column("trial_id")).to_pylist()
                held |= set(ids)
                counts[name] = len(ids)  # also records the counts a manifest of an earlier version lacks
        merged_names, leftovers, tables = [], [], []
        progress = progress if snap.inbox else None  # nothing to read: no progress to show
        for k, name in enumerate(snap.inbox):
            if progress:
                progress(k, len(snap.inbox))
            tid = name[: -len(".parquet")]
            table, problem = self._read_inbox(name, None)
            if table is None:
                continue  # damaged (quarantined by `run`) or gone
            if tid in held:
                leftovers.append(name)  # a leftover of a killed compaction: the segment has it
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
            if merge_all or all(t is not None for t in full):  # never merge a damaged segment away: repair's
                tables = tables + [t for t in full if t is not None]
                replaced, segments = segments, []
        written = None
        if tables:
            try:
                written = self._add_segment(generation, segments, _one_version_per_trial(tables, None), counts)
            except SegmentNotVerified as e:
                log.warning("%s; the files it merged stay, the next compaction tries again", e)
                return 0
        elif merge_all:
            self._write_manifest(generation, [], {})
        for name in leftovers:
            self.loc.delete(f"{TRIALS_DIR}/{name}")
        if written:
            self._retain(generation, merged_names + replaced)
        for name in replaced:
            self.loc.delete(f"{SEGMENT_IDS}/{name}")
            self._segment_cache = {k: v for k, v in self._segment_cache.items() if k[0] != name}
        return n_merged

    def _retain(self, generation: int, names: list[str]) -> None:
        """Move what the verified segment of `generation` merged to .merged/<generation>/ and delete older
        generations there: the newest segment keeps a copy of its inputs until the next one is verified."""
        for name in names:
            try:
                self.loc.move(f"{TRIALS_DIR}/{name}", f"{MERGED}/{generation:08d}/{name}")
            except FileNotFoundError:
                pass
        for e in self.loc.list(MERGED):
            if e.type == pafs.FileType.Directory and e.base_name.isdigit() and int(e.base_name) < generation:
                self.loc.delete_dir(f"{MERGED}/{e.base_name}")

    def import_rows(self, table: pa.Table) -> str:
        """Store many trials' rows (a table of SCHEMA, one version per trial_id) as one new segment: the
        driver only, e.g. to import another store's trials, or to build a large store at once."""
        self.guard()
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
        return self._add_segment(snap.generation + 1, snap.segments, table, snap.counts)

    def _add_segment(self, generation: int, segments: list[str], table: pa.Table, counts: dict[str, int]) -> str:
        """Write `table` sorted by trial_id as a segment, read it back, write its ids file, then the
        manifest naming it after `segments`. SegmentNotVerified (the new file removed) if it reads back
        other than written: nothing it merged is touched."""
        name = f"{SEGMENT_PREFIX}{generation:08d}-{uuid.uuid4().hex[:8]}.parquet"
        rel = f"{TRIALS_DIR}/{name}"
        table = table.sort_by("trial_id")
        self.guard()
        self.loc.write_bytes(rel, parquet_bytes(table))
        problem = self._verify(rel, table)
        if problem:
            self.loc.delete(rel)
            raise SegmentNotVerified(f"{self.loc.show(rel)}: the new segment reads back wrong ({problem})")
        ids = pc.unique(table.column("trial_id"))
        self.loc.write_bytes(f"{SEGMENT_IDS}/{name}", parquet_bytes(pa.table({"trial_id": ids})))
        self._write_manifest(generation, segments + [name], counts | {name: len(ids)})
        return name

    def _verify(self, rel: str, table: pa.Table) -> str | None:
        """What is wrong with a segment just written (row count, trial ids), or None."""
        try:
            back = _read_ids(self.loc, rel, unique=False)
        except (FileNotFoundError, DamagedFile) as e:
            return str(e) or "gone"
        if len(back) != table.num_rows:
            return f"{len(back)} rows, {table.num_rows} written"
        if not back.equals(table.column("trial_id").combine_chunks()):
            return "its trial ids differ from those written"
        return None

    def _write_manifest(self, generation: int, segments: list[str], counts: dict[str, int]) -> None:
        self.guard()
        doc = {
            "generation": generation,
            "segments": segments,
            "trials": {s: counts[s] for s in segments if s in counts},
            "written_at": time.time(),
        }
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
        return int(name[len(SEGMENT_PREFIX) :].split("-", 1)[0])
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
    pq.write_table(
        table,
        sink,
        row_group_size=ROW_GROUP,
        use_dictionary=other,
        write_statistics=other,
        compression={c: "none" if c in bits else "snappy" for c in names},
        column_encoding={c: "PLAIN" for c in bits} or None,
    )
    return sink.getvalue().to_pybytes()


def _read_ids(loc: Location, rel: str, unique: bool = True) -> pa.Array:
    """A file's trial_id column as one array (an ids file's, or a segment's read back)."""
    try:
        with loc.fs.open_input_file(loc.path(rel)) as f:
            column = pq.ParquetFile(f).read(columns=["trial_id"]).column("trial_id").combine_chunks()
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError, ValueError, KeyError) as e:
        if isinstance(e, OSError) and "not found" in str(e).lower():
            raise FileNotFoundError(rel) from None
        raise DamagedFile(f"not a readable Parquet file ({str(e).splitlines()[0][:160] if str(e) else e!r})") from None
    if pa.types.is_dictionary(column.type):
        column = column.cast(pa.string())
    return pc.unique(column) if unique else column


def _read_parquet(loc: Location, rel: str, cols=None) -> pa.Table:
    """A Parquet file's table (only `cols` that exist in it), or DamagedFile / FileNotFoundError."""
    try:
        # A local segment is memory-mapped: its pages come from the OS cache, where reading them through
        # fresh buffers faults in gigabytes of new memory at 1,000 attributes (2.5 GB of bits per split:
        # docs/benchmarks.md, "Statistics commands at 1,000 attributes"). Segments are never rewritten in place.
        with pa.memory_map(loc.path(rel)) if loc.local else loc.fs.open_input_file(loc.path(rel)) as f:
            pf = pq.ParquetFile(f)
            check_schema(pf.schema_arrow)  # the whole file's columns, whatever is read
            have = pf.schema_arrow.names
            if cols is not None:  # narrow reads (the queries) keep low-cardinality columns dictionary-encoded
                pf = pq.ParquetFile(
                    f, metadata=pf.metadata, read_dictionary=[c for c in DICTIONARY if c in cols and c in have]
                )
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
