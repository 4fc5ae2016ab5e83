"""The pricing API's fast paths for small calls (one shape or scalars: no broadcast machinery; a
single option-type word: a dict lookup; a new output: no aliasing scan) give what the general
path gives, bit for bit, and refuse the same inputs with the same messages."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dpm.errors import InvalidInputError
from dpm.pricing import greeks, implied_vol, price

SHAPES = [(), (5,), (3, 1), (1, 5), (3, 5)]


def _inputs(rng, shapes):
    F = 100.0 * np.exp(rng.normal(0, 0.1, shapes[0]))
    K = 100.0 * np.exp(rng.normal(0, 0.3, shapes[1]))
    vol = rng.uniform(0.2, 1.2, shapes[2])
    T = rng.uniform(0.01, 2.0, shapes[3])
    cp = rng.choice([-1.0, 1.0], shapes[4])
    return F, K, vol, T, cp


@pytest.mark.parametrize("shapes", list(itertools.product(SHAPES, repeat=2)))
def test_every_shape_combination_prices_as_the_broadcast_arrays(shapes):
    rng = np.random.default_rng(len(shapes[0]) * 7 + len(shapes[1]))
    # forward and strike take the two shapes, the rest the first
    F, K, vol, T, cp = _inputs(rng, (shapes[0], shapes[1], shapes[0], shapes[0], shapes[1]))
    try:
        full = [np.array(a) for a in np.broadcast_arrays(F, K, vol, T, cp)]  # contiguous copies, ndim kept
    except ValueError:
        with pytest.raises(InvalidInputError, match="shapes do not broadcast together"):
            price(F, K, vol, T, cp)
        return
    got = price(F, K, vol, T, cp)
    want = price(*full)
    assert np.shape(got) == full[0].shape
    assert np.array_equal(np.asarray(got).view(np.int64), np.asarray(want).view(np.int64))
    g = greeks(F, K, vol, T, cp)
    gw = greeks(*full)
    for name in g:
        assert np.array_equal(np.asarray(g[name]), np.asarray(gw[name]))
    iv = implied_vol(got, F, K, T, cp)
    assert np.array_equal(np.asarray(iv), np.asarray(implied_vol(want, *full[:2], *full[3:])))
    np.testing.assert_allclose(price(F, K, iv, T, cp), got, rtol=1e-12, atol=1e-12)  # reprices


def test_scalar_words_and_their_errors():
    assert price(100.0, 110.0, 0.5, 1.0, "Call ") == price(100.0, 110.0, 0.5, 1.0, 1.0)
    assert price(100.0, 110.0, 0.5, 1.0, "p") == price(100.0, 110.0, 0.5, 1.0, -1)
    with pytest.raises(InvalidInputError, match=r"option_type: expected 'call' or 'put' \(or \+1/-1\), index 0 is 'cal'"):
        price(100.0, 110.0, 0.5, 1.0, "cal")


@pytest.mark.parametrize("rate", [np.nan, np.inf, "x"])
def test_a_bad_scalar_rate_is_still_refused(rate):
    with pytest.raises(Exception) as err:
        price(100.0, 110.0, 0.5, 1.0, "call", rate=rate)
    assert "rate" in str(err.value)


def test_zero_rates_as_scalars_or_arrays_give_the_same_bits():
    F, K, vol, T, cp = _inputs(np.random.default_rng(3), [(6,)] * 5)
    a = price(F, K, vol, T, cp, rate=0.0, carry=0.0)
    b = price(F, K, vol, T, cp, rate=np.zeros(6), carry=np.zeros(6))
    c = price(F, K, vol, T, cp, rate=np.full(6, 0.03))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_a_new_output_and_out_give_the_same_bits_and_out_may_be_an_input():
    F, K, vol, T, cp = _inputs(np.random.default_rng(4), [(50,)] * 5)
    want = price(F, K, vol, T, cp)
    out = np.empty(50)
    price(F, K, vol, T, cp, out=out)
    assert np.array_equal(out, want)
    Fc = F.copy()
    price(Fc, K, vol, T, cp, out=Fc)  # out= is the forward itself: priced from a copy
    assert np.array_equal(Fc, want)
