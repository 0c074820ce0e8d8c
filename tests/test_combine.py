"""The combine engine: agreement with ccdproc, rejection rules, masks, VAR, bounded memory."""
import tracemalloc
import warnings

import numpy as np
import pytest

from gmosred.params import ParameterError
from gmosred.frame import dq as dqbits
from gmosred.engines.combine import Band, CombineParams, combine, combine_arrays


def _stack(n=9, shape=(120, 90), seed=1, hits=True):
    rng = np.random.default_rng(seed)
    arrs = [rng.normal(100, 5, shape).astype(np.float32) for _ in range(n)]
    if hits:
        for a in arrs[:3]:
            a[rng.integers(0, shape[0], 40), rng.integers(0, shape[1], 40)] += 400
    return arrs


def _ccdproc(arrs, **kw):
    import ccdproc
    from astropy.nddata import CCDData

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ccdproc.combine([CCDData(a, unit="adu") for a in arrs], dtype=np.float32, **kw).data


@pytest.mark.parametrize("ours, theirs", [
    (dict(method="average", reject="sigclip", maxiters=1, center="mean"),
     dict(method="average", sigma_clip=True, sigma_clip_low_thresh=3, sigma_clip_high_thresh=3,
          sigma_clip_func=np.ma.mean, sigma_clip_dev_func=np.ma.std)),
    (dict(method="median", reject="sigclip", maxiters=1, center="median"),
     dict(method="median", sigma_clip=True, sigma_clip_low_thresh=3, sigma_clip_high_thresh=3,
          sigma_clip_func=np.ma.median, sigma_clip_dev_func=np.ma.std)),
    (dict(method="median", reject="none"), dict(method="median")),
    (dict(method="average", reject="none"), dict(method="average")),
    (dict(method="average", reject="minmax", nlow=1, nhigh=2), dict(method="average", clip_extrema=True, nlow=1, nhigh=2)),
])
def test_agrees_with_ccdproc(ours, theirs):
    """Same inputs and rejection settings: the same result as ccdproc.combine, to float32 precision."""
    arrs = _stack()
    got = combine_arrays(arrs, CombineParams(**ours, band_mb=0.05)).sci
    # float32 precision: within 2.5 units in the last place
    np.testing.assert_allclose(got, _ccdproc(arrs, **theirs), rtol=2.5 * np.finfo(np.float32).eps, atol=0)


def test_band_size_and_threads_do_not_change_the_result():
    arrs = _stack()
    a = combine_arrays(arrs, CombineParams(band_mb=0.01, threads=1))
    b = combine_arrays(arrs, CombineParams(band_mb=100, threads=2))
    for x, y in ((a.sci, b.sci), (a.var, b.var), (a.dq, b.dq), (a.nused, b.nused)):
        np.testing.assert_array_equal(x, y)


def test_rejection_finds_the_hits_and_keeps_the_rest():
    arrs = _stack(n=9, hits=False)
    clean = combine_arrays(arrs, CombineParams(reject="none"))
    arrs[0][10, 10] += 1000
    arrs[1][20, 30] -= 800
    for reject in ("avsigclip", "minmax"):
        res = combine_arrays(arrs, CombineParams(reject=reject))
        assert res.nused[10, 10] <= 8 and abs(res.sci[10, 10] - 100) < 10
    # plain sigma clipping needs more inputs: one outlier among n sits at most (n-1)/sqrt(n) sigma out
    many = _stack(n=20, hits=False)
    many[0][10, 10] += 1000
    res = combine_arrays(many, CombineParams(reject="sigclip"))
    assert res.nused[10, 10] == 19 and abs(res.sci[10, 10] - 100) < 5
    res = combine_arrays(arrs, CombineParams(reject="avsigclip"))
    # avsigclip keeps good values: almost every pixel keeps all 9
    assert np.mean(res.nused) / 9 > 0.995
    varclip = combine_arrays(arrs, CombineParams(reject="varclip", center="median"), variances=[np.full_like(a, 25.0) for a in arrs])
    # 3-sigma clipping against the noise model loses a few tenths of a percent of good values
    assert varclip.nused[20, 30] == 8 and np.mean(varclip.nused) / 9 > 0.995
    diff = (varclip.sci - clean.sci).ravel()
    assert abs(np.delete(diff, [10 * 90 + 10, 20 * 90 + 30]).mean()) < 0.02  # symmetric: no bias


def test_nkeep():
    arrs = [np.full((4, 4), v, np.float32) for v in (1.0, 2.0, 100.0, 200.0)]
    res = combine_arrays(arrs, CombineParams(reject="minmax", nlow=2, nhigh=2, nkeep=1))
    assert (res.nused == 4).all()  # rejecting 4 of 4 would break nkeep: nothing is rejected
    res = combine_arrays(arrs, CombineParams(reject="minmax", nlow=1, nhigh=1, nkeep=1))
    assert (res.nused == 2).all() and np.allclose(res.sci, 51.0)


def test_dq_masks_and_no_data():
    arrs = _stack(n=5, hits=False)
    dqs = [np.zeros(a.shape, np.uint16) for a in arrs]
    arrs[0][5, 5] = 1e6
    dqs[0][5, 5] = dqbits.COSMIC_RAY
    for d in dqs:
        d[7, 7] = dqbits.BAD_PIXEL
        d[8, 8] = dqbits.NON_LINEAR  # not a "fail" bit: used
    res = combine_arrays(arrs, CombineParams(reject="none"), dqs=dqs)
    assert res.nused[5, 5] == 4 and res.sci[5, 5] < 200
    assert res.dq[7, 7] & dqbits.NO_DATA and res.dq[7, 7] & dqbits.BAD_PIXEL and res.nused[7, 7] == 0
    assert np.isfinite(res.sci[7, 7])
    assert res.nused[8, 8] == 5 and res.dq[8, 8] == dqbits.NON_LINEAR
    assert res.dq[5, 5] == 0  # AND of the inputs: flagged in one input only


def test_variance():
    rng = np.random.default_rng(4)
    arrs = [rng.normal(0, 3.0, (300, 300)).astype(np.float32) for _ in range(6)]
    res = combine_arrays(arrs, CombineParams(reject="none"))
    assert np.mean(res.var) == pytest.approx(9.0 / 6, rel=0.02)
    assert np.var(res.sci) == pytest.approx(9.0 / 6, rel=0.03)
    prop = combine_arrays(arrs, CombineParams(reject="none", var="propagate"),
                          variances=[np.full_like(a, 9.0) for a in arrs])
    assert np.allclose(prop.var, 1.5)
    # weighted: inverse-variance weights give the smallest variance
    varr = [np.full_like(a, v) for a, v in zip(arrs, (1, 2, 4, 8, 16, 32))]
    w = combine_arrays(arrs, CombineParams(reject="none", var="propagate"), variances=varr,
                       weights=[1, 1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32])
    assert np.allclose(w.var, 1 / sum(1 / np.array([1, 2, 4, 8, 16, 32])))
    scaled = combine_arrays(arrs, CombineParams(reject="none"), scales=[2.0] * 6, offsets=[1.0] * 6)
    np.testing.assert_allclose(scaled.sci, 2 * res.sci + 1, atol=1e-5)


def test_memory_is_bounded_by_bands():
    """Combining 16 inputs of 1000x1000 keeps a band of each, not the whole stack."""
    shape, n = (1000, 1000), 16

    def provider(k):
        def band(y0, y1, out):
            rng = np.random.default_rng([k, y0])
            return Band(rng.normal(10, 1, (y1 - y0, shape[1])).astype(np.float32))
        return band

    tracemalloc.start()
    res = combine([provider(k) for k in range(n)], shape, CombineParams(band_mb=8, threads=1))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    total_input = n * shape[0] * shape[1] * 4
    assert res.sci.shape == shape and abs(res.sci.mean() - 10) < 0.01
    assert peak < 0.5 * total_input, (peak, total_input)


def test_bad_parameters():
    with pytest.raises(ParameterError, match="CombineParams: reject = 'clip': choose from none, minmax"):
        CombineParams(reject="clip")
    with pytest.raises(ValueError, match="varclip rejection needs input VAR"):
        combine_arrays(_stack(n=3), CombineParams(reject="varclip"))


def _reference_pixel(values, variances, dqs, weights, p: CombineParams):
    """The documented rules for one pixel, value by value (slow, plain Python): value, VAR, DQ, count."""
    usable = [k for k, v in enumerate(values) if np.isfinite(v) and not dqs[k] & dqbits.FAIL]
    keep = set(usable)

    def centre(ks, first):
        vs = sorted(values[k] for k in ks)
        if not vs:
            return 0.0
        if p.center == "median":
            return float(np.median(np.array(vs, np.float32)))
        if p.center == "trimmed" and first and len(vs) > 2:
            return float(np.float32(sum(map(float, vs[1:-1])) / (len(vs) - 2)))
        return float(np.float32(sum(map(float, vs)) / max(len(vs), 1)))

    if len(values) >= 2 and p.reject == "minmax" and len(usable) - p.nlow - p.nhigh >= max(p.nkeep, 1):
        ranked = sorted(usable, key=lambda k: (values[k], k))
        keep = set(ranked[p.nlow:len(ranked) - p.nhigh])
    elif len(values) >= 2 and p.reject in ("sigclip", "avsigclip", "varclip"):
        for it in range(p.maxiters):
            c = centre(keep, it == 0)
            if p.reject == "sigclip":
                mean = np.mean([float(values[k]) for k in keep]) if keep else 0.0
                s = {k: np.sqrt(np.mean([(float(values[j]) - mean) ** 2 for j in keep])) for k in keep}
            else:
                s = {k: np.sqrt(variances[k]) for k in keep}
            out = {k for k in keep if not -p.lsigma * s[k] <= values[k] - c <= p.hsigma * s[k]}
            if not out or len(keep) - len(out) < max(p.nkeep, 1):
                break
            keep -= out
    kept = sorted(keep)
    if not kept:
        finite = [float(v) for v in values if np.isfinite(v)]
        dq = np.bitwise_and.reduce(dqs) if p.dq == "and" else 0
        return (np.mean(finite) if finite else 0.0), 0.0, dq | dqbits.NO_DATA, 0
    w = np.array([weights[k] for k in kept])
    x = np.array([float(values[k]) for k in kept])
    value = np.median(np.array(x, np.float32)) if p.method == "median" else np.sum(w * x) / np.sum(w)
    if p.var == "propagate":
        v = np.array([variances[k] for k in kept])
        var = np.sum(v * w * w) / np.sum(w) ** 2 if p.method == "average" else np.sum(v) / len(kept) ** 2 * np.pi / 2
    else:
        var = np.sum((x - np.float32(value)) ** 2) / (len(x) - 1) / len(x) if len(x) > 1 else 0.0
        var *= np.pi / 2 if p.method == "median" else 1.0
    dq = np.bitwise_and.reduce(dqs) if p.dq == "and" else np.bitwise_or.reduce([dqs[k] for k in kept])
    return value, var, dq, len(kept)


@pytest.mark.parametrize("settings", [
    dict(reject="none"), dict(reject="none", dq="or"), dict(reject="minmax", nlow=1, nhigh=2), dict(reject="minmax", nlow=3, nhigh=3, nkeep=2),
    dict(reject="sigclip", lsigma=2.0, hsigma=2.0), dict(reject="sigclip", center="median", maxiters=1),
    dict(reject="sigclip", center="mean", lsigma=1.5, hsigma=1.5, nkeep=5), dict(reject="varclip"),
    dict(reject="varclip", center="median", var="propagate", dq="or"), dict(method="median", reject="sigclip"),
    dict(method="median", reject="none", var="propagate"), dict(reject="minmax", dq="or", var="propagate"),
])
@pytest.mark.parametrize("weighted", [False, True])
def test_every_pixel_follows_the_rules(settings, weighted):
    """The compiled engine against the rules worked out value by value, on inputs with outliers, NaN,
    masked values and a pixel masked in every input: every pixel's value, VAR, DQ and count."""
    rng = np.random.default_rng(11)
    n, shape = 7, (12, 15)
    values = rng.normal(50, 3, (n, *shape)).astype(np.float32)
    values[rng.integers(0, n, 30), rng.integers(0, 12, 30), rng.integers(0, 15, 30)] += 60
    values[2, 3, 4] = np.nan
    values[:, 6, 6] = np.nan  # nothing at all: 0, NO_DATA
    variances = np.full((n, *shape), 9.0, np.float32) * np.arange(1, n + 1, dtype=np.float32)[:, None, None] / 4
    dqs = np.zeros((n, *shape), np.uint16)
    dqs[rng.integers(0, n, 25), rng.integers(0, 12, 25), rng.integers(0, 15, 25)] = rng.choice([1, 2, 8, 64], 25)
    dqs[:, 5, 5] |= dqbits.BAD_PIXEL
    weights = rng.uniform(0.5, 2, n) if weighted else np.ones(n)
    p = CombineParams(**settings)
    got = combine_arrays(list(values), p, variances=list(variances), dqs=list(dqs),
                         weights=weights if weighted else None)
    for y in range(shape[0]):
        for x in range(shape[1]):
            want = _reference_pixel(values[:, y, x], variances[:, y, x], dqs[:, y, x],
                                    weights if p.method == "average" else np.ones(n), p)
            assert got.nused[y, x] == want[3], (y, x)
            assert got.sci[y, x] == pytest.approx(want[0], rel=1e-5, abs=1e-4), (y, x)
            assert got.var[y, x] == pytest.approx(want[1], rel=1e-4, abs=1e-6), (y, x)
            assert got.dq[y, x] == want[2], (y, x)


def test_avsigclip_sigma_is_the_rows_average():
    """avsigclip clips each pixel against its row's average sigma: a value 3.5 row-sigmas out goes, one at
    2.5 stays, although with 5 inputs the pixel's own scatter could never show either."""
    rng = np.random.default_rng(2)
    n, shape = 5, (4, 400)
    values = rng.normal(0, 2, (n, *shape)).astype(np.float32)
    row_sigma = np.sqrt(np.mean(np.var(values, axis=0, ddof=1), axis=1))
    values[0, 1, 7] = np.float32(3.5 * row_sigma[1]) + np.mean(values[1:, 1, 7])
    values[0, 2, 9] = np.float32(2.5 * row_sigma[2]) + np.mean(values[1:, 2, 9])
    got = combine_arrays(list(values), CombineParams(reject="avsigclip", maxiters=1))
    assert got.nused[1, 7] == n - 1 and got.nused[2, 9] == n
    assert np.mean(got.nused == n) > 0.98


@pytest.mark.parametrize("reject", ["avsigclip", "sigclip"])
@pytest.mark.parametrize("maxiters", [1, 10])
def test_pixels_settled_from_their_extremes_match_the_full_rules(reject, maxiters):
    """Most clipped pixels lose only their lowest or highest value and are settled from the sums and
    extremes; with weights (all 1) every clipped pixel is worked value by value instead: same results."""
    rng = np.random.default_rng(5)
    values = rng.normal(0, 3, (40, 30, 200)).astype(np.float32)
    values[rng.integers(0, 40, 300), rng.integers(0, 30, 300), rng.integers(0, 200, 300)] += 60
    p = CombineParams(reject=reject, maxiters=maxiters)
    fast = combine_arrays(list(values), p)
    full = combine_arrays(list(values), p, weights=np.ones(40))
    assert 0.05 < np.mean(fast.nused < 40) < 0.9  # plenty of pixels clipped, most of them by one value
    np.testing.assert_array_equal(fast.nused, full.nused)
    np.testing.assert_allclose(fast.sci, full.sci, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fast.var, full.var, rtol=1e-5, atol=1e-9)
