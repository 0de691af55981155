"""The statistics (aal_sweep.analysis.stats) against reference implementations and known answers, and the pair /
partner / gain tables (aal_sweep.analysis.pairs) on constructed correctness vectors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp
from statsmodels.stats.multitest import multipletests

from aal_sweep.analysis import stats
from aal_sweep.analysis.pairs import (
    GAIN_COLUMNS,
    PAIR_COLUMNS,
    UNAVAILABLE,
    adversarial_gains,
    baseline_table,
    pairs_table,
)
from aal_sweep.analysis.partners import choose_partners

# ---- stats -------------------------------------------------------------------------------------


def image_bootstrap(diff: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """The reference: (n_boot, K) means of each row of `diff` (K x n) over images resampled with
    replacement, the same resample for every row."""
    rng = np.random.default_rng(seed)
    k, n = diff.shape
    idx = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    weights = np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)
    return weights @ np.asarray(diff, dtype=np.float64).T / n


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000])
def test_pack_unpack_round_trip_in_numpy_big_bit_order(n):
    v = np.random.default_rng(n).random(n) < 0.5
    blob = stats.pack(v)
    assert blob == np.packbits(v).tobytes()  # the store's contract: numpy.packbits, default (big) bit order
    assert len(blob) == (n + 7) // 8
    np.testing.assert_array_equal(stats.unpack(blob, n), v)
    assert stats.unpack(None, n) is None


def test_mcnemar_is_the_exact_binomial_test_on_discordant_counts():
    rng = np.random.default_rng(0)
    b = np.concatenate([[0, 0, 1, 5, 10, 3, 50, 200], rng.integers(0, 60, 40)])
    c = np.concatenate([[0, 3, 1, 0, 12, 17, 80, 150], rng.integers(0, 60, 40)])
    ours = stats.mcnemar_counts(b, c)
    for bi, ci, p in zip(b, c, ours):
        ref = 1.0 if bi + ci == 0 else sp.binomtest(int(ci), int(bi + ci), 0.5).pvalue
        assert p == pytest.approx(ref, rel=1e-9, abs=1e-15), (bi, ci)


def test_mcnemar_counts_the_discordant_images_of_vectors():
    base = np.array([1, 1, 1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    other = np.array([1, 0, 0, 0, 0, 1, 1, 0, 0, 1], dtype=bool)  # b = 4 (base only), c = 1 (other only)
    assert stats.mcnemar(base, other)[0] == pytest.approx(sp.binomtest(1, 5, 0.5).pvalue)
    assert stats.mcnemar(base, base)[0] == 1.0  # no discordant image


@pytest.mark.parametrize("method,reference", [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjustment_matches_statsmodels(method, reference):
    rng = np.random.default_rng(1)
    for m in (1, 2, 5, 39):
        p = np.concatenate([rng.uniform(0, 0.01, m // 3), rng.uniform(0, 1, m - m // 3)])
        rng.shuffle(p)
        np.testing.assert_allclose(stats.adjust(p, method), multipletests(p, method=reference)[1], rtol=1e-12)
    p = np.array([0.01, 0.01, 0.04, 0.5])  # ties
    np.testing.assert_allclose(stats.adjust(p, method), multipletests(p, method=reference)[1])


def test_adjustment_leaves_missing_cells_out_of_the_family():
    p = np.array([0.01, np.nan, 0.02, 0.5])
    out = stats.adjust(p, "holm")
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2, 3]], multipletests(p[[0, 2, 3]], method="holm")[1])
    assert np.isnan(stats.adjust(np.array([np.nan]), "bh")).all()
    with pytest.raises(ValueError, match="holm, bh"):
        stats.adjust(p, "bonferroni")


def test_bootstrap_interval_agrees_with_scipy_percentile_bootstrap():
    rng = np.random.default_rng(2)
    base = rng.random(600) < 0.8
    other = base ^ (rng.random(600) < 0.1)
    d, lo, hi = stats.bootstrap_ci(base[None], other[None], 0.95)
    ref = sp.bootstrap(
        (other.astype(float) - base.astype(float),),
        np.mean,
        method="percentile",
        n_resamples=4000,
        confidence_level=0.95,
        random_state=3,
    ).confidence_interval
    assert d[0] == pytest.approx(other.mean() - base.mean())
    # the exact percentiles and scipy's 4,000-resample estimate of them: equal within its resampling error
    assert lo[0] == pytest.approx(ref.low, abs=0.003) and hi[0] == pytest.approx(ref.high, abs=0.003)


def test_count_bootstrap_is_the_image_bootstrap():
    # the interval comes from discordant counts; resampling the images themselves gives the same law
    rng = np.random.default_rng(7)
    base = rng.random((3, 2000)) < 0.85
    other = base ^ (rng.random((3, 2000)) < np.array([[0.02], [0.06], [0.1]]))
    _, lo, hi = stats.bootstrap_ci(base, other, 0.9)
    reps = image_bootstrap(other.astype(np.float32) - base.astype(np.float32), 4000, seed=11)
    ref_lo, ref_hi = np.quantile(reps, [0.05, 0.95], axis=0)
    np.testing.assert_allclose(lo, ref_lo, atol=0.002)  # the Monte Carlo error of a 4,000-resample estimate
    np.testing.assert_allclose(hi, ref_hi, atol=0.002)


def test_bootstrap_interval_covers_the_true_difference_at_about_the_nominal_rate():
    # 400 independent simulated cells of 400 images: a = correct with prob q_i, b changes 8% of images
    # towards correct with prob 0.4 (true difference 0.08 * (0.4 - mean q) per image, computed exactly)
    rng = np.random.default_rng(4)
    k, n = 400, 400
    q = rng.uniform(0.6, 0.95, size=(k, n))
    base = rng.random((k, n)) < q
    flip = rng.random((k, n)) < 0.08
    other = np.where(flip, rng.random((k, n)) < 0.4, base)
    truth = (0.08 * (0.4 - q)).mean(axis=1)  # expectation over the images' sampling of the difference
    _, lo, hi = stats.bootstrap_ci(base, other, 0.95)
    coverage = ((lo <= truth) & (truth <= hi)).mean()
    assert 0.91 <= coverage <= 0.99, coverage  # 95% nominal; the binomial sd of 400 cells is 0.011


def test_seed_test_covers_a_seed_level_effect_and_matches_its_p_value():
    # 3 seeds; each trained model is off by a seed-level N(0, 0.02) accuracy shift: an image-level test
    # alone would undercover badly; the combined one must not.
    rng = np.random.default_rng(5)
    k, s, n = 300, 3, 800
    q = rng.uniform(0.6, 0.9, size=(k, 1, n))
    delta = -0.02
    base = rng.random((k, s, n)) < q + rng.normal(0, 0.02, (k, s, 1))
    other = rng.random((k, s, n)) < q + delta + rng.normal(0, 0.02, (k, s, 1))
    per_seed = other.mean(2) - base.mean(2)
    diff = (other.astype(np.float32) - base.astype(np.float32)).mean(1)
    image_var = stats.image_variance(diff)
    boot_var = image_bootstrap(diff[:20], 2000).var(axis=0, ddof=1)
    np.testing.assert_allclose(boot_var, image_var[:20], rtol=0.15)  # what the image bootstrap estimates
    mean, lo, hi, p, df = stats.seed_test(per_seed, image_var, 0.95)
    coverage = ((lo <= delta) & (delta <= hi)).mean()
    assert 0.92 <= coverage <= 1.0, coverage
    only_images = np.abs(mean - delta) <= 1.96 * np.sqrt(image_var)
    assert only_images.mean() < 0.85  # what ignoring the seeds would claim
    assert np.all((p < 0.05) == ((hi < 0) | (lo > 0)))  # the interval and the test say the same
    assert np.all(df >= s - 1)


def test_seed_test_degenerate_cases():
    mean, lo, hi, p, _ = stats.seed_test(np.zeros((1, 2)), np.zeros(1))
    assert mean[0] == 0 and p[0] == 1.0
    _, _, _, p, _ = stats.seed_test(np.full((1, 2), -1.0), np.zeros(1))
    assert p[0] == 0.0


def test_above_rate_is_the_one_sided_binomial_test():
    for k, n, r in [(90, 100, 0.8), (80, 100, 0.8), (5, 10, 0.9), (100, 100, 0.99)]:
        ref = sp.binomtest(k, n, r, alternative="greater").pvalue
        assert stats.above_rate(k, n, r)[0] == pytest.approx(ref, rel=1e-9)
    assert np.isnan(stats.above_rate(5, 10, np.nan)[0])


def test_a_forty_attribute_matrix_is_vectorised():
    # not a timing test (that is benchmarks/stats.py): 1,560 cells go through one call, no per-cell loop
    rng = np.random.default_rng(6)
    base = rng.random((1560, 300)) < 0.9
    d, lo, hi = stats.bootstrap_ci(base, base ^ (rng.random((1560, 300)) < 0.02))
    assert d.shape == lo.shape == hi.shape == (1560,) and np.all(lo <= d) and np.all(d <= hi)


# ---- tables from constructed store rows ----------------------------------------------------------


N = 2000


def _row(kind, attribute, partner, seed, correct, lam=None, test_correct=None, majority=0.6):
    return {
        "trial_id": f"{kind}-{attribute}-{partner}-{lam}-s{seed}",
        "kind": kind,
        "attribute": attribute,
        "partner": partner,
        "lambda": lam,
        "seed": seed,
        "status": "ok",
        "val_acc": correct.mean(),
        "test_acc": (test_correct if test_correct is not None else correct).mean(),
        "val_correct": stats.pack(correct),
        "test_correct": stats.pack(test_correct if test_correct is not None else correct),
        "n_val": len(correct),
        "n_test": len(correct),
        "val_majority": majority,
    }


def _store(seeds=(0,), hurt=0.0, rng_seed=0):
    """A (single, pair) store of A, B, C: only pair (A, B) changes A, by flipping `hurt` of A's correct
    images to wrong; every other pair model is its single model with 1% of images independently redrawn."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for s in seeds:
        single = {a: rng.random(N) < 0.85 for a in "ABC"}
        for a in "ABC":
            rows.append(_row("single", a, None, s, single[a]))
        for a in "ABC":
            for b in "ABC":
                if a == b:
                    continue
                v = np.where(rng.random(N) < 0.01, rng.random(N) < 0.85, single[a])
                if (a, b) == ("A", "B"):
                    v = v & ~(rng.random(N) < hurt)
                rows.append(_row("pair", a, b, s, v))
    return pd.DataFrame(rows)


def _derived(trials):
    from aal_sweep.analysis.matrix import pair_matrix
    from aal_sweep.analysis.partners import derive_partners

    return derive_partners(pair_matrix(trials, list("ABC")))


def test_pairs_table_one_seed_mcnemar_and_holm_within_rows():
    trials = _store(hurt=0.05)
    t = pairs_table(trials, list("ABC"))
    assert list(t.columns) == PAIR_COLUMNS and len(t) == 6
    ab = t[(t.attribute == "A") & (t.partner == "B")].iloc[0]
    single = stats.unpack(trials[(trials.kind == "single") & (trials.attribute == "A")].val_correct.iloc[0], N)
    multi = stats.unpack(
        trials[(trials.kind == "pair") & (trials.attribute == "A") & (trials.partner == "B")].val_correct.iloc[0], N
    )
    assert ab["drop"] == pytest.approx(multi.mean() - single.mean())
    assert ab["p_value"] == pytest.approx(
        sp.binomtest(int((~single & multi).sum()), int((single ^ multi).sum()), 0.5).pvalue
    )
    row_a = t[t.attribute == "A"]
    np.testing.assert_allclose(row_a.p_adjusted, multipletests(row_a.p_value, method="holm")[1])
    assert ab["significant"] and ab["ci_high"] < 0 and ab["n_seeds"] == 1 and ab["test"] == "mcnemar"
    assert not ab["at_baseline"]
    # the drop's standard error: of the mean per-image difference (the measured screening weighs cells by it)
    diff = multi.astype(float) - single.astype(float)
    assert ab["drop_se"] == pytest.approx(diff.std() / np.sqrt(N))


def test_significant_rule_finds_the_real_partner_and_argmin_names_one_everywhere():
    for hurt, expect_ab in ((0.05, True), (0.0, False)):
        trials = _store(seeds=(0, 1), hurt=hurt)
        pairs = pairs_table(trials, list("ABC"))
        base = baseline_table(trials, list("ABC"))
        argmin = choose_partners(_derived(trials), pairs, base, "argmin")
        significant = choose_partners(_derived(trials), pairs, base, "significant")
        assert (pairs.test == "seeds-t").all() and (pairs.n_seeds == 2).all()
        assert pairs[["single_sd", "multi_sd", "drop_sd"]].notna().all().all()  # the spread across seeds
        assert argmin.partner.notna().sum() >= 2  # noise alone gives most attributes some negative drop
        assert (significant.rule == "significant").all() and (argmin.rule == "argmin").all()
        chosen = dict(zip(significant.attribute, significant.partner))
        assert (chosen["A"] == "B") is expect_ab
        assert chosen["B"] is None and chosen["C"] is None
        if expect_ab:
            row = significant.set_index("attribute").loc["A"]
            assert row["significant"] and row["drop"] < -0.03 and row["candidate"] == "B"


def test_statistics_unavailable_without_correctness_vectors():
    trials = _store(hurt=0.05)
    trials["val_correct"] = None  # a results folder written before the vectors were stored
    trials = trials.drop(columns=["val_majority"])
    pairs = pairs_table(trials, list("ABC"))
    assert (pairs.test == UNAVAILABLE).all() and pairs.p_value.isna().all() and pairs.significant.isna().all()
    assert pairs["drop"].notna().all()  # the accuracy difference is still known
    assert pairs.at_baseline.isna().all() and pairs.majority.isna().all()
    chosen = choose_partners(_derived(trials), pairs, baseline_table(trials, list("ABC")), "argmin")
    assert chosen.partner.notna().any() and chosen.p_value.isna().all()
    assert chosen.significant[chosen.candidate.notna()].isna().all()  # unknown, not "no"


def test_majority_baseline_flags_a_one_class_model():
    trials = _store()
    rng = np.random.default_rng(9)
    one_class = rng.random(N) < 0.9  # images of C's majority class; the model predicts that class for all
    trials.loc[trials.attribute == "C", "val_majority"] = one_class.mean()
    idx = trials.index[(trials.kind == "single") & (trials.attribute == "C")][0]
    trials.at[idx, "val_correct"] = stats.pack(one_class)
    trials.at[idx, "val_acc"] = one_class.mean()
    base = baseline_table(trials, list("ABC"))
    assert not base.loc["C", "single_above_majority"] and base.loc["A", "single_above_majority"]
    pairs = pairs_table(trials, list("ABC"))
    assert pairs[pairs.attribute == "C"].at_baseline.all()
    assert not pairs[pairs.attribute == "A"].at_baseline.any()


def test_adversarial_gains_on_the_test_split():
    rng = np.random.default_rng(3)
    single = rng.random(N) < 0.8
    multi = single & ~(rng.random(N) < 0.05)
    adv = single | (rng.random(N) < 0.3)  # clearly better than both
    rows = [
        _row("single", "A", None, 0, single),
        _row("pair", "A", "B", 0, multi),
        _row("adversarial", "A", "B", 0, adv, lam=0.1),
    ]
    chosen = pd.DataFrame({"attribute": ["A"], "partner": ["B"], "lambda": [0.1]})
    g = adversarial_gains(pd.DataFrame(rows), chosen)
    assert list(g.columns) == GAIN_COLUMNS and list(g.versus) == ["single", "multi"]
    assert g.gain.iloc[0] == pytest.approx(adv.mean() - single.mean())
    assert g.holds.all() and (g.split == "test").all()


def test_adversarial_gains_take_a_repeated_row_s_last_and_read_categoricals_as_names():
    """A key stored twice counts its last row (as the store's own reads do); a store's categorical
    columns (how Store.stats_rows returns kind / attribute / partner) give the same table as names."""
    rng = np.random.default_rng(4)
    single = rng.random(N) < 0.8
    rows = [
        _row("single", "A", None, 0, ~single),  # superseded by the next row of the same key
        _row("single", "A", None, 0, single),
        _row("pair", "A", "B", 0, single & ~(rng.random(N) < 0.05)),
        _row("adversarial", "A", "B", 0, ~single, lam=0.3),  # another lambda: not the chosen one
        _row("adversarial", "A", "B", 0, single | (rng.random(N) < 0.3), lam=0.1),
        _row("single", "B", None, 0, single),
    ]
    chosen = pd.DataFrame({"attribute": ["A", "B"], "partner": ["B", "A"], "lambda": [0.1, 0.1]})
    plain = pd.DataFrame(rows)
    g = adversarial_gains(plain, chosen)
    assert g.reference.iloc[0] == pytest.approx(single.mean())  # the last single row of A
    assert list(g.attribute) == ["A", "B", "A", "B"] and (g.gain.iloc[[0, 2]] > 0).all()
    assert g.iloc[[1, 3]].adversarial.isna().all()  # B has no adversarial row: missing, not another's
    coded = plain.astype({c: "category" for c in ("kind", "attribute", "partner")})
    pd.testing.assert_frame_equal(adversarial_gains(coded, chosen), g)


# ---- seeds in the config and the plan ------------------------------------------------------------


def _cfg(train: dict, **extra):
    from aal_sweep.config import parse_config

    return parse_config({"dataset": {"root": "x"}, "train": train, **extra}, check_files=False)


def test_seeds_default_to_train_seed_and_leave_the_training_hash_alone():
    from aal_sweep.orchestration.trials import plan_initial

    legacy = _cfg({"seed": 0})
    assert legacy.seeds == (0,) and _cfg({}).seeds == (0,)
    three = _cfg({"seeds": [0, 1, 2]})
    assert three.seeds == (0, 1, 2) and three.training_hash() == legacy.training_hash()
    # adding seeds to a finished sweep only adds trials: the old ids are all still planned
    attrs = ("A", "B", "C")
    old = {t.trial_id for t in plan_initial(legacy, attrs)}
    new = plan_initial(three, attrs)
    assert old < {t.trial_id for t in new} and len(new) == 3 * len(old)
    assert {t.seed for t in new} == {0, 1, 2} and all(f"-s{t.seed}-" in t.trial_id for t in new)
    assert _cfg({"seeds": [3, 4]}).train.seed == 3  # the first seed is train.seed


def test_each_trial_trains_with_its_own_seed():
    from aal_sweep.orchestration.trials import Trial, plan_initial

    cfg = _cfg({"seeds": [0, 5]})
    trials = plan_initial(cfg, ("A", "B"))
    assert sorted({t.spec(cfg).seed for t in trials}) == [0, 5]
    t = trials[-1]
    assert Trial.from_dict(t.to_dict()) == t
    legacy = t.to_dict()
    del legacy["seed"]  # a Tune experiment saved before seeds existed
    assert Trial.from_dict(legacy).seed == t.seed


@pytest.mark.parametrize(
    "train,partners,message",
    [
        ({"seed": 1, "seeds": [0, 1]}, {}, "train.seed: 1 is not the first of train.seeds"),
        ({"seeds": [0, 0]}, {}, "train.seeds: expected distinct integers"),
        ({"seeds": []}, {}, "train.seeds: expected a list of ints with at least 1 items"),
        ({}, {"rule": "best"}, "partners.rule: 'best' is not one of argmin, significant"),
        ({}, {"correction": "bonferroni"}, "partners.correction: 'bonferroni' is not one of holm, bh"),
        ({}, {"alpha": 1.5}, "partners.alpha: must be between 0 and 1"),
        ({}, {"alpha": 0}, "partners.alpha: must be between 0 and 1"),
    ],
)
def test_bad_seed_and_partner_settings_are_named(train, partners, message):
    from aal_sweep.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        _cfg(train, partners=partners)


def test_partner_settings_round_trip_through_sweep_yaml():
    from aal_sweep.config import parse_config

    cfg = _cfg({"seeds": [0, 1]}, partners={"rule": "significant", "alpha": 0.01, "correction": "bh"})
    assert parse_config(cfg.to_dict(), check_files=False) == cfg
    assert cfg.partners.rule == "significant" and cfg.partners.alpha == 0.01 and cfg.partners.correction == "bh"
    assert _cfg({}).partners.rule == "argmin"  # the paper's rule stays the default


def test_significant_rule_skips_cells_at_the_majority_baseline():
    trials = _store(hurt=0.05)
    trials.loc[trials.attribute == "A", "val_majority"] = 0.9  # A's models (85%) do no better than one class
    pairs = pairs_table(trials, list("ABC"))
    ab = pairs.set_index(["attribute", "partner"]).loc[("A", "B")]
    assert ab["significant"] and ab["at_baseline"]
    chosen = choose_partners(_derived(trials), pairs, baseline_table(trials, list("ABC")), "significant")
    assert chosen.set_index("attribute").loc["A", "partner"] is None
    assert not chosen.set_index("attribute").loc["A", "single_above_majority"]


def test_image_variance_of_integer_differences_is_exact():
    d = np.random.default_rng(8).integers(-3, 4, size=(5, 1001)).astype(np.int16)
    np.testing.assert_allclose(stats.image_variance(d), d.astype(float).var(axis=1) / 1001, rtol=1e-12)


# ---- the exact bootstrap interval and the vectorised tables ------------------------------------------


def monte_carlo_bootstrap(b, c, n, level=0.95, n_boot=2000, seed=0):
    """The reference: the interval as computed before it was exact (2,000 resamples drawn as the two
    discordant counts, seed 0), i.e. a Monte Carlo estimate of the quantiles bootstrap_interval computes."""
    b, c = np.asarray(b, dtype=np.int64), np.asarray(c, dtype=np.int64)
    rng = np.random.default_rng(seed)
    b_star = rng.binomial(n, b / n, size=(n_boot, len(b)))
    rest = n - b
    c_star = rng.binomial(n - b_star, np.divide(c, rest, out=np.zeros(len(c)), where=rest > 0))
    return np.quantile((c_star - b_star) / n, [(1 - level) / 2, (1 + level) / 2], axis=0)


def enumerated_quantiles(b, c, n, level):
    """The bootstrap distribution of D = C* - B* enumerated exactly (B* ~ Bin(n, b/n), C* | B* ~
    Bin(n - B*, c / (n - b))): the smallest d with P[D <= d] >= q, for both ends."""
    k = np.arange(int(min(n, b + 12 * np.sqrt(b) + 30)) + 1)
    j = np.arange(int(min(n, c + 12 * np.sqrt(c) + 30)) + 1)
    joint = sp.binom.pmf(k, n, b / n)[:, None] * sp.binom.pmf(j[None, :], (n - k)[:, None], c / (n - b) if n > b else 0)
    d = j[None, :] - k[:, None] + k[-1]
    cdf = np.cumsum(np.bincount(d.ravel(), weights=joint.ravel(), minlength=len(k) + len(j)))
    return [(np.searchsorted(cdf, q - 1e-12) - k[-1]) / n for q in ((1 - level) / 2, (1 + level) / 2)]


def test_exact_bootstrap_interval_is_the_enumerated_distribution_quantile():
    rng = np.random.default_rng(12)
    cases = [(n, b, c) for n in (3, 10, 40) for b in range(0, 6) for c in range(0, 6) if 0 < b + c <= n]
    for _ in range(120):
        n = int(rng.choice([400, 1003, 19867]))
        total = int(np.exp(rng.uniform(np.log(6), np.log(min(n, 3000)))))
        c = int(rng.integers(0, total + 1))
        cases.append((n, total - c, c))
    off = []
    for n, b, c in cases:
        for level in (0.9, 0.95, 0.99):
            lo, hi = stats.bootstrap_interval(np.array([b]), np.array([c]), n, level)
            ref = enumerated_quantiles(b, c, n, level)
            off += [abs(lo[0] - ref[0]) * n, abs(hi[0] - ref[1]) * n]
    off = np.round(off)
    assert off.max() <= 1  # never more than one lattice step (1/n) from the exact quantile
    assert (off == 0).mean() > 0.95
    lo, hi = stats.bootstrap_interval(np.array([0, 9, 0]), np.array([0, 0, 9]), 9)  # no spread: a point
    np.testing.assert_array_equal(lo, [0, -1, 1])
    np.testing.assert_array_equal(hi, lo)


def test_exact_interval_differs_from_the_monte_carlo_one_by_its_noise_only():
    rng = np.random.default_rng(13)
    n = 19867
    b, c = rng.integers(20, 900, 400), rng.integers(20, 900, 400)
    lo, hi = stats.bootstrap_interval(b, c, n)
    mc_lo, mc_hi = monte_carlo_bootstrap(b, c, n)
    # the Monte Carlo sd of a 2.5% percentile of 2,000 resamples: sqrt(q (1 - q) / 2000) / density
    sd_boot = np.sqrt(((b + c) / n - ((c - b) / n) ** 2) / n)
    mc_sd = sd_boot * np.sqrt(0.025 * 0.975 / 2000) / sp.norm.pdf(sp.norm.ppf(0.025))
    for new, old in ((lo, mc_lo), (hi, mc_hi)):
        z = (new - old) / mc_sd
        assert np.abs(new - old).max() <= 4.5 * mc_sd.max() + 1 / n
        assert abs(z.mean()) < 0.2 and 0.7 < z.std() < 1.3  # unbiased, and the spread is the noise's


def test_vectorised_tables_match_the_stored_reference():
    """tests/data/*_reference_*.csv: the tables of a random store by the per-cell implementation before
    vectorisation. Identical, but for the one-seed interval ends, which were its Monte Carlo estimates."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "data"))
    from make_pairs_reference import N_IMAGES, NAMES, chosen, reference_store

    for label, seeds in (("1seed", (0,)), ("3seeds", (0, 1, 2))):
        trials = reference_store(seeds)
        pairs = pairs_table(trials, NAMES)
        gains = pd.concat([adversarial_gains(trials, chosen(trials), split=s) for s in ("val", "test")])
        for new, ref in (
            (pairs, pd.read_csv(Path(__file__).parent / "data" / f"pairs_reference_{label}.csv")),
            (
                gains.reset_index(drop=True),
                pd.read_csv(Path(__file__).parent / "data" / f"gains_reference_{label}.csv"),
            ),
        ):
            added = ["drop_se"] if "drop_sd" in ref else []  # computed after the reference was made: checked below
            assert [c for c in new.columns if c not in added] == list(ref.columns) and len(new) == len(ref)
            new = new[list(ref.columns)]
            one_seed = (new["test"] == "mcnemar").to_numpy()
            for col in new.columns:
                got, want = new[col], ref[col]
                if col in ("ci_low", "ci_high"):
                    got, want = got.to_numpy(float), want.to_numpy(float)
                    np.testing.assert_array_equal(got[~one_seed], want[~one_seed])
                    assert np.all(np.abs(got[one_seed] - want[one_seed]) <= 3 / N_IMAGES)  # Monte Carlo noise
                elif got.dtype == object or str(got.dtype) in ("str", "string"):
                    assert [None if pd.isna(x) else str(x) for x in got] == [
                        None if pd.isna(x) else str(x) for x in want
                    ], col
                else:  # p-values, drops, accuracies, spreads, seeds, flags: the same numbers
                    np.testing.assert_array_equal(
                        got.astype(float).to_numpy(), want.astype(float).to_numpy(), err_msg=col
                    )


def test_arrow_backed_bits_give_the_same_table_as_bytes():
    # what Store.stats_rows hands over: the bit column in Arrow memory, several chunks, nulls between
    import pyarrow as pa

    from aal_sweep.analysis.bits import Packed

    trials = _store(seeds=(0, 1), hurt=0.05)
    trials.loc[3, "val_correct"] = None
    blobs = trials["val_correct"].tolist()
    arrow = pa.chunked_array([pa.array(blobs[:5], pa.binary()), pa.array(blobs[5:], pa.binary())])
    frame = trials.assign(val_correct=pd.Series(pd.arrays.ArrowExtensionArray(arrow), index=trials.index))
    pd.testing.assert_frame_equal(pairs_table(frame, list("ABC")), pairs_table(trials, list("ABC")))
    bits = Packed.of(frame["val_correct"], N)
    assert not bits.has[3] and bits.has[[0, 4, 5, 10]].all()
    rows = [0, 4, 5, 10]
    want = np.stack([stats.unpack(blobs[i], N) for i in rows])
    np.testing.assert_array_equal(bits.ones(rows), want.sum(axis=1))
    np.testing.assert_array_equal(bits.both(rows, rows[::-1]), (want & want[::-1]).sum(axis=1))


def test_padding_bits_and_odd_blobs_are_ignored():
    from aal_sweep.analysis.bits import Packed

    v = np.random.default_rng(14).random(13) < 0.5  # 2 bytes, 3 padding bits
    blob = bytearray(stats.pack(v))
    blob[-1] |= 0b111  # garbage in the padding: unpackbits(count=13) ignores it, so must the counts
    bits = Packed.of(pd.Series([bytes(blob), b"\x00", None, float("nan")], dtype=object), 13)
    assert list(bits.has) == [True, False, False, False]
    assert bits.ones([0])[0] == v.sum() and bits.both([0], [0])[0] == v.sum()
