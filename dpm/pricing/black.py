"""Vectorised Black-76 and Black-Scholes-Merton prices and greeks, linear and inverse.

All functions broadcast their array arguments with numpy rules, validate them (a clear error names the
argument and the first bad index), never modify them, and run the ``nogil`` kernels of
``dpm._core._black`` over chunks of the flattened arrays on ``workers`` threads.

Units: ``vol`` is decimal (0.65 = 65 %), ``time`` is in years, ``rate`` and ``carry`` are continuously
compounded annual rates. ``option_type`` is ``'call'``/``'put'`` (or ``'c'``/``'p'``) or ``+1``/``-1``.

Models
------
``model="black76"`` (default): the first argument is the forward (or futures) price ``F`` and the value
is ``exp(-rate*T) * B(F, K, vol, T)``. ``model="bsm"``: the first argument is the spot ``S``, with
``F = S * exp((rate - carry) * T)``; greeks are then with respect to the spot.

``inverse=True`` (Black-76 only) gives coin-settled (Deribit-style) values: the value in coin is the
USD value divided by the forward, ``c = V / F``, and every greek is the derivative of ``c`` itself.
See ``docs/pricing.md`` for the formulas and conventions.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from dpm._core import _black, _implied
from dpm._util import parallel as _parallel
from dpm._util.validation import as_float_array, first_bad_index
from dpm.errors import InvalidInputError, InvalidTypeError

__all__ = ["price", "greeks", "implied_vol", "IV_FLAGS", "GREEK_NAMES", "option_type_sign"]

GREEK_NAMES = ("price", "delta", "gamma", "vega", "theta", "rho", "vanna", "volga")
_SECOND_ORDER = ("rho", "vanna", "volga")  # outputs only the full kernel variant computes

_MODELS = {"black76": 0, "black": 0, "bsm": 1, "black_scholes": 1, "black-scholes": 1}
_TYPE_WORDS = {"call": 1.0, "c": 1.0, "put": -1.0, "p": -1.0}
# below this many elements the thread pool costs more than it saves
_MIN_CHUNK = 16384
_NO_FIX = np.empty(0, dtype=np.uint8)  # the kernels' legacy "redone" flags: no longer written


def option_type_sign(option_type: Any, name: str = "option_type", *, check_values: bool = True) -> np.ndarray:
    """Convert ``'call'``/``'put'``/``'c'``/``'p'`` or ``+1``/``-1`` (scalar or array) to float ±1.

    ``check_values=False`` skips the ±1 scan of numeric input (the pricing kernels' fused input
    check covers it and calls :func:`_check_option_type` to name the bad element).
    """
    if isinstance(option_type, str):  # one word: a dict lookup (np.unique costs ~50 us a call)
        sign = _TYPE_WORDS.get(option_type.strip().lower())
        if sign is None:
            raise InvalidInputError(f"{name}: expected 'call' or 'put' (or +1/-1), index 0 is {str(option_type)!r}")
        return np.array(sign)
    arr = np.asarray(option_type)
    if arr.dtype.kind in "USO":
        flat = arr.ravel()
        out = np.empty(flat.shape, dtype=np.float64)
        # map the distinct strings, not every element, so long arrays stay cheap
        uniq, inv = np.unique(flat.astype(str), return_inverse=True)
        signs = np.empty(len(uniq))
        for j, word in enumerate(uniq):
            sign = _TYPE_WORDS.get(word.strip().lower())
            if sign is None:
                i = int(np.flatnonzero(inv == j)[0])
                raise InvalidInputError(
                    f"{name}: expected 'call' or 'put' (or +1/-1), index {i} is {str(flat[i])!r}"
                )
            signs[j] = sign
        out[:] = signs[inv]
        return out.reshape(arr.shape)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise InvalidTypeError(f"{name}: expected 'call'/'put' or +1/-1, got dtype {arr.dtype}")
    cp = arr.astype(np.float64, copy=False)
    if check_values:
        _check_option_type(cp, name)
    return cp


def _check_option_type(cp: np.ndarray, name: str = "option_type") -> None:
    bad = (cp != 1.0) & (cp != -1.0)
    if bad.any():
        idx = first_bad_index(bad) if cp.ndim else ()
        where = f"index {idx[0] if len(idx) == 1 else idx}" if cp.ndim else "value"
        raise InvalidInputError(
            f"{name}: expected +1 (call) or -1 (put), {where} is {cp[idx].item()!r}"
        )


def _is_masked_array(x: Any) -> bool:
    """``isinstance(x, np.ma.MaskedArray)`` without importing ``numpy.ma`` (25-35 ms) when nothing
    has: no masked array can exist before it is imported."""
    ma = sys.modules.get("numpy.ma")
    return ma is not None and isinstance(x, ma.MaskedArray)


def _as_float(x: Any, name: str) -> np.ndarray:
    """``as_float_array`` that refuses masked arrays (their mask would be silently dropped)."""
    if _is_masked_array(x):
        raise InvalidTypeError(
            f"{name}: masked arrays are not supported; pass a plain array (e.g. {name}.filled(...)) "
            "or drop the masked elements"
        )
    return as_float_array(x, name)


def _reject_masked(x: Any, name: str) -> Any:
    if _is_masked_array(x):
        raise InvalidTypeError(f"{name}: masked arrays are not supported; pass a plain array")
    return x


def _flag(value: Any, name: str) -> bool:
    """A real ``bool`` (or numpy bool scalar): strings, arrays and numbers are refused, so that
    ``inverse="no"`` is never taken as True."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InvalidTypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")


def _model_code(model: str) -> int:
    try:
        return _MODELS[str(model).lower()]
    except KeyError:
        raise InvalidInputError(f"model: expected 'black76' or 'bsm', got {model!r}") from None


def _check(arr: np.ndarray, name: str, *, positive: bool = False, nonneg: bool = False) -> None:
    """Raise naming the first element of ``arr`` that is not finite (or not >0 / >=0)."""
    with np.errstate(invalid="ignore"):
        if positive:
            bad = ~(arr > 0) | (arr == np.inf)
            what = "must be finite and > 0"
        elif nonneg:
            bad = ~(arr >= 0) | (arr == np.inf)
            what = "must be finite and >= 0"
        else:
            bad = ~np.isfinite(arr)
            what = "must be finite"
    if bad.any():
        if arr.ndim == 0:
            raise InvalidInputError(f"{name}: {what}, got {arr[()].item()!r}")
        idx = first_bad_index(bad)
        where = idx[0] if len(idx) == 1 else idx
        extra = ""
        if name == "time" and arr[idx] < 0:
            extra = " (the option has expired)"
        raise InvalidInputError(f"{name}: {what}, index {where} is {arr[idx].item()!r}{extra}")


def _flat(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` broadcast to ``shape`` as one flat contiguous array: a view when it is already a full
    contiguous array (checked first: the broadcast machinery costs several microseconds a call,
    most of a small call's time), else one copy."""
    if a.shape == shape and a.flags.c_contiguous:
        return a.reshape(-1)
    return np.ascontiguousarray(np.broadcast_to(a, shape)).reshape(-1)


def _all_zero(a: np.ndarray) -> bool:
    """Every element is 0 (a NaN is not); a scalar without a numpy reduction (microseconds a call)."""
    return a.item() == 0.0 if a.ndim == 0 else not a.any()


class _Prepared:
    """Validated, broadcast, contiguous float64 inputs of one pricing call."""

    __slots__ = ("shape", "F", "K", "sigma", "T", "cp", "r", "q", "model", "inverse", "n", "_args")

    def __init__(self, forward, strike, vol, time, option_type, rate, carry, model, inverse,
                 workers=None, validate=True):
        self.model = _model_code(model)
        self.inverse = _flag(inverse, "inverse")
        if self.inverse and self.model == 1:
            raise InvalidInputError(
                "inverse=True needs model='black76': coin-settled options are priced on the forward"
            )
        args = {
            "forward": _as_float(forward, "forward"),
            "strike": _as_float(strike, "strike"),
            "vol": _as_float(vol, "vol"),
            "time": _as_float(time, "time"),
            "option_type": option_type_sign(_reject_masked(option_type, "option_type"),
                                            check_values=False),
            "rate": _as_float(rate, "rate"),
            "carry": _as_float(carry, "carry"),
        }
        shapes = {a.shape for a in args.values()}
        shapes.discard(())
        if len(shapes) <= 1:  # scalars and arrays of one shape, the usual call: no broadcast machinery
            self.shape = shapes.pop() if shapes else ()
        else:
            try:
                self.shape = np.broadcast_shapes(*shapes)
            except ValueError:
                listed = ", ".join(f"{k} {v.shape}" for k, v in args.items() if v.ndim)
                raise InvalidInputError(f"shapes do not broadcast together: {listed}") from None
        self.n = math.prod(self.shape)

        def flat(a: np.ndarray) -> np.ndarray:
            return _flat(a, self.shape)

        self.F = flat(args["forward"])
        self.K = flat(args["strike"])
        self.sigma = flat(args["vol"])
        self.T = flat(args["time"])
        self.cp = flat(args["option_type"])
        if _all_zero(args["rate"]) and _all_zero(args["carry"]):
            # all-zero rates: the kernel skips the discounting arithmetic entirely
            self.r = self.q = np.empty(0)
        else:
            self.r = flat(args["rate"])
            self.q = flat(args["carry"])
        self._args = args
        if validate:
            self.validate(workers)

    def validate(self, workers: int | None) -> None:
        """One vectorised pass over the flat inputs, in parallel chunks; the slow numpy scan that
        names the offending element runs only when something is wrong."""
        r, q = self.r, self.q
        has_rq = r.size > 0

        def ok(start: int, stop: int) -> bool:
            sl = slice(start, stop)
            return _black.inputs_ok(self.F[sl], self.K[sl], self.sigma[sl], self.T[sl], self.cp[sl],
                                    r[sl] if has_rq else r, q[sl] if has_rq else q)

        if not all(_parallel.run_chunked(ok, self.n, workers, min_chunk=_MIN_CHUNK)):
            self.raise_invalid()

    def raise_invalid(self) -> None:
        """Raise the error naming the first invalid argument and element."""
        args = self._args
        _check_option_type(args["option_type"])
        _check(args["forward"], "forward" if self.model == 0 else "spot", positive=True)
        _check(args["strike"], "strike", positive=True)
        _check(args["vol"], "vol", nonneg=True)
        _check(args["time"], "time", nonneg=True)
        _check(args["rate"], "rate")
        _check(args["carry"], "carry")
        # the kernel check and the numpy checks disagree (should not happen): still fail closed
        raise InvalidInputError("inputs outside the pricing domain")  # pragma: no cover

    def raise_non_finite(self, i: int, what: str) -> None:
        """Fail closed on a result that is not finite (flat element ``i``): inputs inside the domain
        whose price or greek overflows a double (a strike 1e300 times the forward of an inverse
        option, a denormal forward, ...). Names the element and its inputs."""
        idx = np.unravel_index(i, self.shape) if self.shape else ()
        where = f"element {tuple(int(j) for j in idx)}" if len(idx) > 1 else f"row {int(idx[0]) if idx else 0}"
        name = "forward" if self.model == 0 else "spot"
        inputs = (f"{name} {float(self.F[i])!r}, strike {float(self.K[i])!r}, vol {float(self.sigma[i])!r}, "
                  f"time {float(self.T[i])!r}{', inverse' if self.inverse else ''}")
        raise InvalidInputError(f"{name}/strike: {where}: the {what} is not finite ({inputs}): the inputs are "
                                "outside the range where it fits in a double")

    def dealias(self, outputs: Sequence[np.ndarray]) -> bool:
        """Copy every flat input that may share memory with an output (``out=`` being one of the
        inputs, or a view of one).  The kernels read each block of inputs before writing its
        outputs, but a partially overlapping view would feed outputs back in as inputs.  Returns
        True if anything was copied."""
        copied = False
        for name in ("F", "K", "sigma", "T", "cp", "r", "q"):
            arr = getattr(self, name)
            if arr.size and any(np.may_share_memory(arr, o) for o in outputs):
                setattr(self, name, arr.copy())
                copied = True
        return copied


def _output(out: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=np.float64)
    if not isinstance(out, np.ndarray) or out.dtype != np.float64:
        raise InvalidTypeError(f"{name}: must be a float64 numpy array")
    if out.shape != shape:
        raise InvalidInputError(f"{name}: has shape {out.shape}, expected {shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise InvalidInputError(f"{name}: must be C-contiguous and writeable")
    return out


def _result(arr: np.ndarray) -> np.ndarray:
    return arr[()] if arr.ndim == 0 else arr


def _first_non_finite(arrays: Sequence[np.ndarray], start: int, stop: int) -> tuple[int, int]:
    """``(flat index, array number)`` of the first non-finite value of ``arrays[k][start:stop]``, or
    ``(-1, -1)``; run per chunk in the workers, while the chunk is still in cache."""
    for k, a in enumerate(arrays):
        if a.size and not np.isfinite(a[start:stop]).all():
            return start + int(np.flatnonzero(~np.isfinite(a[start:stop]))[0]), k
    return -1, -1


def _raise_first_non_finite(p: _Prepared, found: list[tuple[int, int]], names: Sequence[str]) -> None:
    hits = [f for f in found if f[0] >= 0]
    if hits:
        i, k = min(hits)
        p.raise_non_finite(i, names[k])


def price(
    forward: Any,
    strike: Any,
    vol: Any,
    time: Any,
    option_type: Any,
    *,
    rate: Any = 0.0,
    carry: Any = 0.0,
    model: str = "black76",
    inverse: bool = False,
    out: np.ndarray | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """European option prices.

    Parameters
    ----------
    forward : array_like
        Forward/futures price (``model="black76"``) or spot price (``model="bsm"``); > 0.
    strike : array_like
        Strike price; > 0.
    vol : array_like
        Implied volatility, decimal; >= 0 (0 gives the discounted intrinsic value of the forward).
    time : array_like
        Time to expiry in years; >= 0 (0 gives the intrinsic value).
    option_type : array_like
        ``'call'``/``'put'`` (``'c'``/``'p'``) or ``+1``/``-1``.
    rate : array_like, optional
        Continuously compounded discount rate (default 0, as on crypto venues).
    carry : array_like, optional
        Dividend / carry yield ``q`` for ``model="bsm"`` (ignored by Black-76).
    model : {"black76", "bsm"}
        Pricing model.
    inverse : bool
        Coin-settled value ``V / F`` (Black-76 only).
    out : ndarray, optional
        Preallocated float64 C-contiguous output of the broadcast shape.
    workers : int, optional
        Threads to use (None or -1: all cores).

    Returns
    -------
    ndarray
        Prices, in the broadcast shape of the inputs (a numpy scalar for scalar inputs).

    Examples
    --------
    >>> from dpm.pricing import price
    >>> round(float(price(100.0, 100.0, 0.2, 1.0, "call")), 10)
    7.9655674554
    >>> price([100.0, 100.0], 110.0, 0.2, 1.0, ["call", "put"]).round(6)
    array([ 4.292011, 14.292011])
    """
    p = _Prepared(forward, strike, vol, time, option_type, rate, carry, model, inverse, workers,
                  validate=False)
    res = _output(out, p.shape, "out")
    flat = res.reshape(-1)
    # out= that is (a view of) an input: price from copies, and validate before writing anything
    # so that a bad input cannot leave the caller's array half overwritten (a new output aliases nothing)
    check = out is None or not p.dealias([flat])
    if not check:
        p.validate(workers)

    def run(start: int, stop: int) -> tuple[int, tuple[int, int]]:
        bad = _black.price_chunk(p.F, p.K, p.sigma, p.T, p.cp, p.r, p.q, p.model, p.inverse,
                                 flat, _NO_FIX, start, stop, check)
        return bad, _first_non_finite((flat,), start, stop)

    done = _parallel.run_chunked(run, p.n, workers, min_chunk=_MIN_CHUNK)
    if check and any(b >= 0 for b, _ in done):
        p.raise_invalid()
    _raise_first_non_finite(p, [f for _, f in done], ("price",))
    return _result(res)


def greeks(
    forward: Any,
    strike: Any,
    vol: Any,
    time: Any,
    option_type: Any,
    *,
    rate: Any = 0.0,
    carry: Any = 0.0,
    model: str = "black76",
    inverse: bool = False,
    out: Mapping[str, np.ndarray] | None = None,
    which: Sequence[str] | None = None,
    workers: int | None = None,
) -> dict[str, np.ndarray]:
    """Price and analytic greeks in one pass.

    Parameters are those of :func:`price`; ``out`` may map some of :data:`GREEK_NAMES` to
    preallocated arrays. ``which`` limits the result to some of :data:`GREEK_NAMES`; when it asks
    for none of ``rho``, ``vanna``, ``volga``, a leaner kernel computes price, delta, gamma, vega
    and theta only.

    Returns
    -------
    dict of ndarray
        ``price``; ``delta`` (dV/dF, or dV/dS for BSM); ``gamma``; ``vega`` (per 1.00 of vol);
        ``theta`` (-dV/dT per year, i.e. value change as time passes); ``rho`` (dV/d rate; Black-76
        holds the forward fixed); ``vanna`` (d2V/dF dvol); ``volga`` (d2V/dvol2). With
        ``inverse=True`` each is the derivative of the coin value ``V/F``.

    Examples
    --------
    >>> from dpm.pricing import greeks
    >>> g = greeks(100.0, 100.0, 0.2, 1.0, "call")
    >>> round(float(g["delta"]), 10), round(float(g["vega"]), 10)
    (0.5398278373, 39.6952547477)
    """
    wanted = GREEK_NAMES if which is None else tuple(which)
    bad = [g for g in wanted if g not in GREEK_NAMES]
    if bad or not wanted:
        raise InvalidInputError(f"which: unknown or no greek names {bad}; choose from {GREEK_NAMES}")
    if out is not None and not isinstance(out, Mapping):
        raise InvalidTypeError(
            f"out: expected a dict mapping greek names to float64 arrays, got {type(out).__name__}"
        )
    p = _Prepared(forward, strike, vol, time, option_type, rate, carry, model, inverse, workers,
                  validate=False)
    out = dict(out or {})
    unknown = set(out) - set(GREEK_NAMES)
    if unknown:
        raise InvalidInputError(f"out: unknown greek names {sorted(unknown)}; use {GREEK_NAMES}")
    unwanted = set(out) - set(wanted)
    if unwanted:
        raise InvalidInputError(f"out: greek names {sorted(unwanted)} not computed; computing {wanted}")
    full = any(g in wanted for g in _SECOND_ORDER)
    computed = GREEK_NAMES if full else GREEK_NAMES[:5]
    res = {g: _output(out.get(g), p.shape, f"out[{g!r}]") for g in computed}
    given = [g for g in computed if g in out]
    for i, a in enumerate(given):
        for b in given[i + 1:]:
            if np.may_share_memory(res[a], res[b]):
                raise InvalidInputError(f"out: the arrays for {a!r} and {b!r} overlap")
    empty = np.empty(0)
    flats = [res[g].reshape(-1) for g in computed] + ([] if full else [empty] * 3)
    check = not p.dealias([res[g] for g in given])
    if not check:
        p.validate(workers)

    produced = flats[:len(computed)]  # the outputs written (flats pads the unused second order)

    def run(start: int, stop: int) -> tuple[int, tuple[int, int]]:
        bad = _black.greeks_chunk(p.F, p.K, p.sigma, p.T, p.cp, p.r, p.q, p.model, p.inverse,
                                  *flats, _NO_FIX, start, stop, check)
        return bad, _first_non_finite(produced, start, stop)

    done = _parallel.run_chunked(run, p.n, workers, min_chunk=_MIN_CHUNK)
    if check and any(b >= 0 for b, _ in done):
        p.raise_invalid()
    _raise_first_non_finite(p, [f for _, f in done], computed)
    return {g: _result(res[g]) for g in wanted}


# ---------------------------------------------------------------------------------------------
# Implied volatility
# ---------------------------------------------------------------------------------------------

#: Status codes returned by :func:`implied_vol` with ``return_flags=True`` (int8).
IV_FLAGS = {
    0: "ok",
    1: "price below intrinsic value (vol NaN)",
    2: "price at or above the upper bound (vol NaN)",
    3: "price equals intrinsic value, T > 0: no time value (vol 0)",
    4: "T == 0 and price equals intrinsic value: vol undetermined (NaN)",
    5: "the bounded iteration did not converge (vol NaN; not expected for valid prices)",
}
# the solver costs ~100x a price: smaller chunks already pay for a thread
_IV_MIN_CHUNK = 1024


def implied_vol(
    price: Any,
    forward: Any,
    strike: Any,
    time: Any,
    option_type: Any,
    *,
    rate: Any = 0.0,
    carry: Any = 0.0,
    inverse: bool = False,
    model: str = "black76",
    workers: int | None = None,
    return_flags: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Implied volatility of European options, to ~1e-12 in vol wherever the price determines it.

    The inverse of :func:`price`: ``price(forward, strike, implied_vol(p, ...), time, ...) == p``.
    The solver reduces every option to a normalised out-of-the-money call, evaluates it in the log
    domain with scaled complementary error functions (no underflow, no catastrophic cancellation)
    and runs a bracketed Householder iteration of order 3 from asymptotic initial guesses, on SIMD
    blocks of 64 options (at most 15 evaluations per option, 3.6 on average); see
    ``docs/pricing.md``.

    Parameters
    ----------
    price : array_like
        Option prices, discounted, in the units :func:`price` returns (coin when ``inverse=True``).
        Must be finite; prices outside the no-arbitrage range give NaN and a flag, not an error.
    forward, strike, time, option_type, rate, carry, model, inverse, workers
        As in :func:`price`.
    return_flags : bool
        Also return the int8 status codes (see :data:`IV_FLAGS`).

    Returns
    -------
    vol : ndarray
        Implied vols (decimal), in the broadcast shape of the inputs.
    flags : ndarray of int8, only with ``return_flags=True``
        ``0`` ok; ``1`` price below the intrinsic value ``max(cp (F - K), 0)`` (discounted): NaN;
        ``2`` price at or above the upper bound (``F`` for calls, ``K`` for puts, discounted; for
        ``T == 0`` any price above intrinsic): NaN; ``3`` price equals the intrinsic value with
        ``T > 0``: vol 0, the only vol giving no time value (a time value that underflowed to 0
        lands here too); ``4`` ``T == 0`` and price equals intrinsic: every vol fits, NaN; ``5`` the
        bounded iteration did not converge: NaN (not observed for valid prices).
        Prices within 8 ulps of the intrinsic value (ulps of ``max(F, K)``) or of the upper bound
        count as on it.

    Examples
    --------
    >>> from dpm.pricing import price, implied_vol
    >>> p = price(100.0, 120.0, 0.65, 0.25, "call")
    >>> round(float(implied_vol(p, 100.0, 120.0, 0.25, "call")), 14)
    0.65
    >>> vol, flags = implied_vol([1.0, 25.0, 0.0], 100.0, 80.0, 0.5, "call", return_flags=True)
    >>> flags
    array([1, 0, 1], dtype=int8)
    """
    prices = _as_float(price, "price")
    return_flags = _flag(return_flags, "return_flags")
    # validate forward/strike/time/rates exactly as price() does; vol is a dummy zero array with
    # the price's shape so that the broadcast shape includes it
    p = _Prepared(forward, strike, np.zeros(prices.shape), time, option_type, rate, carry, model,
                  inverse, workers)
    shape = p.shape  # the dummy vol has the price's shape: the broadcast shape includes it
    if not np.isfinite(prices).all():
        _check(prices, "price")
    P = _flat(prices, shape)
    vol = np.empty(shape, dtype=np.float64)
    flags = np.empty(shape, dtype=np.int8)
    vflat = vol.reshape(-1)
    fflat = flags.reshape(-1)
    no_iters = np.empty(0, dtype=np.uint8)

    def run(start: int, stop: int) -> object:
        return _implied.implied_chunk(P, p.F, p.K, p.T, p.cp, p.r, p.q, p.model, p.inverse,
                                      vflat, fflat.view(np.int8), no_iters, start, stop)

    _parallel.run_chunked(run, p.n, workers, min_chunk=_IV_MIN_CHUNK)
    if return_flags:
        return _result(vol), _result(flags)
    return _result(vol)
