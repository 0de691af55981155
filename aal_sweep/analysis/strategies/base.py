"""What every measured strategy shares: the cells measured so far, a round, the rules a round obeys, the simulator.

Attributes are positions 0..M-1 in the sweep's order; a pair is (i, j) with i < j, as the exhaustive plan
lists it, and one pair trial measures both of its cells, drop[i, j] and drop[j, i]. A drop is
P[a][b] - P[a][a] (negative: b hurts a), as the pair matrix gives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

# how a row was decided (Round.decided): its evidence reached settings.confidence; every partner of it is
# requested; or the screening ended (budget spent, nothing left worth a trial) before its evidence sufficed
CONFIDENT, COMPLETE, BUDGET = "confident", "complete", "budget"


@dataclass(frozen=True)
class Settings:
    """A measured strategy's settings; config.PairsConfig holds their defaults and checks them (`of`)."""

    budget: float  # the most pair trials, as a share of the exhaustive M (M - 1) / 2
    confidence: float  # a row is decided once P(its exhaustive partner is measured) reaches this
    first_round: int  # partners each attribute meets in the balanced first round
    rank: int  # the low-rank term of the active model
    seed: int  # the first round's draw (and any other random choice of a strategy)

    @classmethod
    def of(cls, pairs) -> Settings:
        """The settings of a config.PairsConfig (where their defaults are written)."""
        return cls(pairs.budget, pairs.confidence, pairs.first_round, pairs.rank, pairs.seed)

    def cap(self, m: int) -> int:
        """The budget in pair trials: floor(budget x M (M - 1) / 2), at least one pair when M >= 2."""
        total = total_pairs(m)
        return min(total, max(1 if total else 0, int(np.floor(self.budget * total + 1e-9))))


@dataclass
class Cells:
    """What the pair trials measured so far: M x M drops and their standard errors (NaN: not measured / not
    known). The diagonal is unused."""

    drop: np.ndarray
    se: np.ndarray

    @classmethod
    def empty(cls, m: int) -> Cells:
        return cls(np.full((m, m), np.nan), np.full((m, m), np.nan))

    @property
    def m(self) -> int:
        return self.drop.shape[0]

    def measured(self) -> np.ndarray:
        return ~np.isnan(self.drop) & ~np.eye(self.m, dtype=bool)


@dataclass(frozen=True)
class Round:
    """One round: the new pairs to train (most wanted first) and the rows decided before training them.

    decided: (row, how, p_measured, through): `how` is CONFIDENT, COMPLETE or BUDGET; `p_measured` the
    model's probability that the row's exhaustive partner (or its having none) is among its measured cells,
    at the decision (None: no model); `through` the last round whose pairs the row's partner is chosen from
    (the round before for a row decided on its evidence, this one for a row the screening's end decides)."""

    number: int
    pairs: tuple[tuple[int, int], ...]
    decided: tuple[tuple[int, str, float | None, int], ...] = ()
    final: bool = False
    reason: str = ""  # the final round's: "decided", "budget" or "exhausted"
    # how well the model predicted the last round's drops before measuring them, 1 - SSE / SST held out (None:
    # no model, or nothing to score yet)
    structure: float | None = None
    extra: dict = field(default_factory=dict, compare=False)  # a strategy's own diagnostics (not stored)


def total_pairs(m: int) -> int:
    return m * (m - 1) // 2


def requested(rounds: list[Round]) -> set[tuple[int, int]]:
    return {p for r in rounds for p in r.pairs}


def decided_rows(rounds: list[Round]) -> dict[int, tuple[str, float | None, int, int]]:
    """row -> (how, p_measured, through, the round that decided it)."""
    return {row: (how, p, through, r.number) for r in rounds for row, how, p, through in r.decided}


def next_round(strategy, rounds: list[Round], cells: Cells, settings: Settings) -> Round:
    """The next round of `strategy` (a module of STRATEGIES), held to the rules every strategy obeys: a pair
    is requested once and the budget never exceeded (the round is cut to what is left, most wanted first,
    and is then the last); a decided row stays decided; when every row is decided, or the budget is spent,
    or the strategy asks for nothing new, this round is the last and decides every row left (BUDGET)."""
    if rounds and rounds[-1].final:
        raise ValueError("the screening has ended: its last round is stored")
    m = cells.m
    number = len(rounds)
    proposed = strategy.plan(m, rounds, cells, settings)
    done = requested(rounds)
    before = decided_rows(rounds)
    pairs, seen = [], set()
    for i, j in proposed.pairs:
        p = (min(i, j), max(i, j))
        if i != j and p not in done and p not in seen:
            pairs.append(p)
            seen.add(p)
    left = settings.cap(m) - len(done)
    final, reason = False, ""
    if len(pairs) >= left:
        pairs, final, reason = pairs[: max(left, 0)], True, "budget"
    decided = [d for d in proposed.decided if d[0] not in before]
    now = set(before) | {d[0] for d in decided}
    if len(now) == m:
        final, reason = True, "decided"
    elif not pairs and not final:
        final, reason = True, "exhausted"
    if final:
        decided += [(row, BUDGET, _p(proposed, row), number) for row in range(m) if row not in now]
    return Round(number, tuple(pairs), tuple(decided), final, reason, proposed.structure, proposed.extra)


def _p(proposed: Round, row: int) -> float | None:
    conf = proposed.extra.get("p_measured")
    return None if conf is None else float(conf[row])


def expected_mask(m: int, rounds: list[Round]) -> np.ndarray:
    """The M x M cells each row's partner is chosen from: a decided row, the pairs of the rounds up to its
    `through`; a row not decided yet, every pair requested so far."""
    mask = np.zeros((m, m), dtype=bool)
    through = {row: t for row, (_, _, t, _) in decided_rows(rounds).items()}
    for r in rounds:
        for i, j in r.pairs:
            if through.get(i, r.number) >= r.number:
                mask[i, j] = True
            if through.get(j, r.number) >= r.number:
                mask[j, i] = True
    return mask


def partner_cells(m: int, rounds: list[Round]) -> np.ndarray:
    """`expected_mask` for the partner rule: a row not decided yet expects every cell (so it names no
    partner before the strategy decides it)."""
    mask = expected_mask(m, rounds)
    undecided = np.ones(m, dtype=bool)
    undecided[list(decided_rows(rounds))] = False
    mask[undecided] = True
    return mask


def requested_names(rounds: list[Round], attributes: list[str]) -> list[tuple[str, str]]:
    """The pairs requested so far, by name, in round order."""
    return [(attributes[i], attributes[j]) for r in rounds for i, j in r.pairs]


def simulate(strategy, drop: np.ndarray, se: np.ndarray | None, settings: Settings) -> list[Round]:
    """Run `strategy` against a complete M x M drop matrix as if every requested pair had been trained and
    had measured its two cells there (with `se`, where given). Returns the rounds."""
    m = drop.shape[0]
    se = np.full((m, m), np.nan) if se is None else se
    cells, rounds = Cells.empty(m), []
    while not (rounds and rounds[-1].final):
        r = next_round(strategy, rounds, cells, settings)
        rounds.append(r)
        for i, j in r.pairs:
            for a, b in ((i, j), (j, i)):
                cells.drop[a, b], cells.se[a, b] = drop[a, b], se[a, b]
    return rounds


# ---- a round as the results folder stores it (RESULTS/screening/<key>/round-<n>.parquet) -------------------

ROUND_SCHEMA = pa.schema(
    [
        ("round", pa.int64()),
        ("event", pa.string()),  # "pair": train attribute x partner; "decided": attribute's row; "end": the round
        ("attribute", pa.string()),
        ("partner", pa.string()),  # pair: the second attribute (after `attribute` in the sweep's order)
        ("how", pa.string()),  # decided: CONFIDENT, COMPLETE or BUDGET
        ("p_measured", pa.float64()),  # decided: P(the row's exhaustive partner is measured), null: no model
        ("through", pa.int64()),  # decided: the last round whose pairs the row's partner is chosen from
        ("final", pa.bool_()),  # end: whether this round is the last
        ("reason", pa.string()),  # end: why the last round is the last
        ("structure", pa.float64()),  # end: how well the model predicted the last round's drops (held out)
    ]
)


def round_table(r: Round, attributes: list[str]) -> pa.Table:
    """One round as a table of ROUND_SCHEMA: its pairs in order, its decisions, one "end" row."""
    rows = [{"event": "pair", "attribute": attributes[i], "partner": attributes[j]} for i, j in r.pairs]
    rows += [
        {"event": "decided", "attribute": attributes[a], "how": how, "p_measured": p, "through": through}
        for a, how, p, through in r.decided
    ]
    rows.append({"event": "end", "final": r.final, "reason": r.reason, "structure": r.structure})
    columns = {f.name: [row.get(f.name) for row in rows] for f in ROUND_SCHEMA if f.name != "round"}
    return pa.Table.from_pydict({"round": [r.number] * len(rows), **columns}, schema=ROUND_SCHEMA)


def round_of(table, attributes: list[str]) -> Round:
    """The Round a stored table holds (`round_table`'s inverse); ValueError if it names unknown attributes."""
    position = {a: i for i, a in enumerate(attributes)}
    rows = table.to_pylist() if hasattr(table, "to_pylist") else table.to_dict("records")
    try:
        number = int(rows[0]["round"])
        pairs = tuple((position[x["attribute"]], position[x["partner"]]) for x in rows if x["event"] == "pair")
        decided = tuple(
            (position[x["attribute"]], x["how"], _float(x["p_measured"]), int(x["through"]))
            for x in rows
            if x["event"] == "decided"
        )
        (end,) = [x for x in rows if x["event"] == "end"]
    except (KeyError, ValueError, IndexError, TypeError) as e:
        raise ValueError(f"not a round of these attributes ({e})") from None
    return Round(number, pairs, decided, bool(end["final"]), end["reason"] or "", _float(end["structure"]))


def _float(v) -> float | None:
    return None if v is None or v != v else float(v)


def rounds_key(cfg, attributes: list[str]) -> str:
    """The folder a measured screening's rounds are stored under (RESULTS/screening/<key>/): the strategy and
    every setting, the attributes, the seeds and the training hash; any change, a new sequence of rounds
    (whose pair trials, the same trials, are reused as they are stored)."""
    import hashlib

    p = cfg.pairs
    names = hashlib.sha1("\x1f".join(attributes).encode()).hexdigest()[:6]
    seeds = "_".join(map(str, cfg.seeds))
    return (
        f"{p.strategy}-b{p.budget:g}-c{p.confidence:g}-f{p.first_round}-r{p.rank}-s{p.seed}-"
        f"{len(attributes)}attrs-{names}-seeds{seeds}-{cfg.training_hash()}"
    )


# ---- what status, partners and the report say of a measured screening ---------------------------------------

# below this held-out score (Round.structure) the matrix shows no structure to learn from
LITTLE_STRUCTURE = 0.1


def summary(strategy: str, rounds: list[Round], m: int, settings: Settings) -> str:
    """One line: rounds, pairs requested of the budget, rows decided and how; a warning where the matrix
    showed no structure and rows were left to the budget."""
    total, cap = total_pairs(m), settings.cap(m)
    n = len(requested(rounds))
    decided = decided_rows(rounds)
    how = {k: sum(1 for d in decided.values() if d[0] == k) for k in (CONFIDENT, COMPLETE, BUDGET)}
    ended = rounds[-1].reason if rounds and rounds[-1].final else ""
    line = (
        f"screened pairs ({strategy}, budget {settings.budget:g} = {cap} of {total} pairs, confidence "
        f"{settings.confidence:g}): {len(rounds)} round(s), {n} pairs requested ({100 * n / max(total, 1):.0f}% of "
        f"the exhaustive pair trials); {len(decided)} of {m} rows decided ({how[CONFIDENT]} on their evidence, "
        f"{how[COMPLETE]} complete, {how[BUDGET]} at the end of the screening)"
        + (f"; ended: {ENDINGS[ended]}" if ended else "; screening")
        + "; unrequested cells stay missing"
    )
    structure = rounds[-1].structure if rounds else None
    if how[BUDGET] and structure is None and rounds and rounds[-1].final:
        line += (
            f". WARNING: the screening ended before any round could test the model (the first round took most of "
            f"the budget): the {how[BUDGET]} rows decided at its end are the best measured, not found with "
            f"confidence; a larger pairs.budget, or pairs.mode: exhaustive, finds their partners"
        )
    elif how[BUDGET] and structure is not None and structure < LITTLE_STRUCTURE:
        line += (
            f". WARNING: the model predicted {100 * structure:.0f}% of the last round's drops' variance before "
            f"measuring them: this matrix "
            f"shows little structure to learn from, and the {how[BUDGET]} rows decided at the end of the "
            f"screening are the best measured, not found with confidence; only training every pair "
            f"(pairs.mode: exhaustive, or a larger pairs.budget) finds their partners"
        )
    return line


ENDINGS = {
    "decided": "every row decided",
    "budget": "the budget is spent",
    "exhausted": "no pair left worth training",
}


def evidence(rounds: list[Round], attributes: list[str]):
    """Per attribute: how its row was decided, in which round, P(its partner is measured) then, and how many
    of its partners it was decided on (None where the row is not decided yet)."""
    import pandas as pd

    decided = decided_rows(rounds)
    mask = expected_mask(len(attributes), rounds)
    rows = []
    for a, name in enumerate(attributes):
        how, p, _, number = decided.get(a, (None, None, None, None))
        rows.append(
            {
                "attribute": name,
                "decided": how,
                "round": number,
                "p_measured": p,
                "measured": int(mask[a].sum()) if how else None,
            }
        )
    return pd.DataFrame(rows)
