"""The discriminator's compiled Numba CPU kernels: its forward and backward per (image, crop)
task, the spectral normalisation and the parameter gradients (the maths is in
:mod:`kgengine.discriminator_numba`, which calls them)."""

from __future__ import annotations

import numpy as np
from numba import njit

from kgengine.discriminator import BN_EPS, SN_EPS
from kgengine.numba_util import put2d as _put

# BN_EPS, SN_EPS and put2d are compiled in; Numba's disk cache hashes only this file's text, so
# COMPILED_IN_DIGEST records them (a test compares it with compiled_in_digest(*COMPILED_IN);
# updating it refreshes the cache). Helpers are inlined at Numba's level
# (``inline="always"``): compiled alone and linked from the cache, they rounded otherwise than
# inlined by LLVM in a fresh compile, so bytes depended on a warm cache (tested).
COMPILED_IN = (BN_EPS, SN_EPS, _put)
COMPILED_IN_DIGEST = "caf9701ac687"
#: Reassociation lets loops use SIMD lanes (order fixed by the code and the loop lengths, not
#: by B); no "nnan": the ReLU keeps NaN, like torch's.
_FAST = {"reassoc", "contract", "nsz"}


@njit(cache=True, inline="always")
def _sn(w, u, v):
    """One power iteration on ``w`` (out, n), updating ``u`` (out,) and ``v`` (n,) in place:
    ``v = normalize(w^T u)``, ``u = normalize(w v)``; returns ``sigma = u^T w v``, with
    ``normalize(a) = a / max(|a|, eps)``.

    Each product element is summed in float64 in index order (i for v, j for w v); the loops
    run many such sums side by side (independent lanes, no reassociation), so the order, and
    each bit, is the one of one element at a time."""
    out, n = w.shape
    acc = np.zeros(n, np.float64)
    for i in range(out):
        ui = u[i]
        for j in range(n):
            acc[j] += ui * w[i, j]
    for j in range(n):
        v[j] = acc[j]
    norm = 0.0
    for j in range(n):
        norm += v[j] * v[j]
    norm = max(np.sqrt(norm), SN_EPS)
    for j in range(n):
        v[j] = v[j] / norm
    wv = np.zeros(out, np.float64)
    for j in range(n):
        vj = v[j]
        for i in range(out):
            wv[i] += w[i, j] * vj
    norm = 0.0
    for i in range(out):
        norm += wv[i] * wv[i]
    norm = max(np.sqrt(norm), SN_EPS)
    sigma = 0.0
    for i in range(out):
        u[i] = wv[i] / norm
        sigma += u[i] * wv[i]
    return sigma


@njit(cache=True, inline="always")
def _divide(w, sigma, out):
    """``out = w / sigma`` for one (out, n) weight, element by element (the bits of the
    array expression; a slice assignment would compile a shape-error message, seconds per
    site on a cold cache)."""
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            out[i, j] = w[i, j] / sigma


@njit(cache=True, inline="always")
def _sn_grad(dws, w, u, v, sigma, dw):
    """``dw = dws / sigma - (sum dws * w) / sigma^2 * u v^T`` for one (out, n) weight."""
    out, n = w.shape
    dot = 0.0
    for i in range(out):
        for j in range(n):
            dot += dws[i, j] * w[i, j]
    c = dot / (sigma * sigma)
    for i in range(out):
        for j in range(n):
            dw[i, j] = dws[i, j] / sigma - c * u[i] * v[j]


@njit(cache=True, fastmath=_FAST, inline="always")
def _im2col(x, k, cols):
    """``cols[(c*k + u)*k + v, i*side + j] = x[c, i + u, j + v]`` for one crop x (3, S, S)."""
    chans, size = x.shape[0], x.shape[1]
    side = size - k + 1
    for c in range(chans):
        for u in range(k):
            for v in range(k):
                r = (c * k + u) * k + v
                for i in range(side):
                    dst = cols[r, i * side : (i + 1) * side]
                    src = x[c, i + u, v : v + side]
                    for j in range(side):
                        dst[j] = src[j]


@njit(cache=True, fastmath=_FAST, inline="always")
def _col2im(dcols, k, dx):
    """The adjoint of :func:`_im2col`: dx (3, S, S) = each column added at its pixels."""
    chans, size = dx.shape[0], dx.shape[1]
    side = size - k + 1
    dx[:] = 0.0
    for c in range(chans):
        for u in range(k):
            for v in range(k):
                r = (c * k + u) * k + v
                for i in range(side):
                    src = dcols[r, i * side : (i + 1) * side]
                    dst = dx[c, i + u, v : v + side]
                    for j in range(side):
                        dst[j] += src[j]


@njit(cache=True, fastmath=_FAST, inline="always")
def _bn_relu(z, bias, gamma, beta, xhat, h, inv):
    """One crop, per channel o: ``z += bias``; BatchNorm over the P positions (biased
    variance) into ``xhat`` and ``inv`` (64,); ``h = relu(gamma * xhat + beta)``.
    z, xhat, h: (64, P); bias, gamma, beta: (64,)."""
    npos = z.shape[1]
    st = np.zeros(2, z.dtype)  # scalars in the array dtype
    zero = st[0]
    for o in range(z.shape[0]):
        bo, g, be = bias[o], gamma[o], beta[o]
        zc, xc, hc = z[o], xhat[o], h[o]
        acc = zero
        for q in range(npos):
            zq = zc[q] + bo
            zc[q] = zq
            acc += zq
        st[1] = acc / npos
        mean = st[1]
        acc = zero
        for q in range(npos):
            d = zc[q] - mean
            acc += d * d
        st[1] = 1.0 / np.sqrt(acc / npos + BN_EPS)
        iv = st[1]
        inv[o] = iv
        for q in range(npos):
            xh = (zc[q] - mean) * iv
            xc[q] = xh
            y = xh * g + be
            hc[q] = y if not y <= zero else zero  # a ReLU that keeps NaN


@njit(cache=True, fastmath=_FAST, inline="always")
def _bn_relu_grad(dh, h, xhat, gamma, inv, dz, dgamma, dbeta, dbias):
    """The backward of :func:`_bn_relu` for one crop: dz (64, P) from dh, and the parameter
    gradients dgamma, dbeta, dbias (64,) (see the module docstring)."""
    npos = dz.shape[1]
    st = np.zeros(3, dz.dtype)
    zero = st[0]
    st[2] = npos
    fnpos = st[2]
    for o in range(dz.shape[0]):
        g = gamma[o]
        dhc, hc, xc, dzc = dh[o], h[o], xhat[o], dz[o]
        s1, s2, sum_dy = zero, zero, zero
        for q in range(npos):
            dy = dhc[q] if hc[q] > zero else zero
            xq = xc[q]
            sum_dy += dy
            dxh = dy * g
            dzc[q] = dxh
            s1 += dxh
            s2 += dxh * xq
        st[1] = inv[o] / npos
        iv = st[1]
        sum_dz = zero
        for q in range(npos):
            dzq = iv * (fnpos * dzc[q] - s1 - xc[q] * s2)
            dzc[q] = dzq
            sum_dz += dzq
        # sum dy * xhat = s2 / gamma would lose bits; keep the direct sums
        acc = zero
        for q in range(npos):
            acc += (dhc[q] if hc[q] > zero else zero) * xc[q]
        dgamma[o], dbeta[o], dbias[o] = acc, sum_dy, sum_dz


@njit(cache=True, fastmath=_FAST, inline="always")
def _crop_forward(x, k, w0s, b0, wms, bm, gamma, beta, wfs, bf, cols, hs, xhat, inv, s):
    """One crop x (3, S, S) through D with normalised weights: cols (3k², P), hs (L+1, 64, P),
    xhat (L, 64, P), inv (L, 64), s (P,) written."""
    _im2col(x, k, cols)
    h = np.dot(w0s, cols)
    for o in range(h.shape[0]):
        for q in range(h.shape[1]):
            h[o, q] += b0[o]
    _put(hs[0], h)
    for m in range(wms.shape[0]):
        _bn_relu(np.dot(wms[m], hs[m]), bm[m], gamma[m], beta[m], xhat[m], hs[m + 1], inv[m])
    logit = np.dot(wfs, hs[wms.shape[0]])
    for q in range(s.shape[0]):
        s[q] = 1.0 / (1.0 + np.exp(-(logit[0, q] + bf[0])))


@njit(cache=True, nogil=True)
def _normalise(w0, wm, wf, u0, v0, um, vm, uf, vf, sig, w0s, wms, wfs):
    """One power iteration per weight and image (u*, v* updated in place): sig (B, L+2) the
    sigmas, w0s, wms, wfs the normalised weights."""
    n_mid = wm.shape[1]
    for b in range(w0.shape[0]):
        sig[b, 0] = _sn(w0[b], u0[b], v0[b])
        _divide(w0[b], sig[b, 0], w0s[b])
        for m in range(n_mid):
            sig[b, 1 + m] = _sn(wm[b, m], um[b, m], vm[b, m])
            _divide(wm[b, m], sig[b, 1 + m], wms[b, m])
        sig[b, 1 + n_mid] = _sn(wf[b], uf[b], vf[b])
        _divide(wf[b], sig[b, 1 + n_mid], wfs[b])


@njit(cache=True, fastmath=_FAST, nogil=True)
def _forward(lo, hi, x, k, w0s, b0, wms, bm, gamma, beta, wfs, bf, cols, hs, xhat, inv, s):
    """D-maps of the (image, crop) tasks lo..hi-1 (task t = image t // N, crop t % N).

    In: x (N, B, 3, S, S); k D's first kernel size; the normalised weights and the other
    parameters with a leading B (w0s as (B, 64, 3k²)). Out: cols (B, N, 3k², P); hs (B, N,
    L+1, 64, P) the first layer's output, then each block's; xhat (B, N, L, 64, P); inv (B, N,
    L, 64); s (B, N, P) the probabilities. Runs without the GIL (tasks on threads).
    """
    n_crops = x.shape[0]
    for t in range(lo, hi):
        b, n = t // n_crops, t % n_crops
        _crop_forward(x[n, b], k, w0s[b], b0[b], wms[b], bm[b], gamma[b], beta[b], wfs[b],
                      bf[b], cols[b, n], hs[b, n], xhat[b, n], inv[b, n], s[b, n])


@njit(cache=True, fastmath=_FAST, inline="always")
def _crop_backward(ds, need_x, p_lo, p_hi, k, w0s, wms, gamma, wfs, cols, hs, xhat, inv, s,
                   dx, gw0, gb0, gwm, gbm, ggamma, gbeta, gwf, gbf):
    """One crop's backward: dx (3, S, S) if ``need_x``; this crop's part of the gradients of
    the layers p_lo..p_hi-1 (0 the first conv, 1 + m block m, L + 1 the last conv) w.r.t. the
    *normalised* weights (gw0, gwm, gwf) and the other parameters. The gradient goes down
    only as far as a requested output needs it; every value is computed as in the full
    backward, so a split of the layers over calls gives the same bits."""
    n_mid = wms.shape[0]
    low = 0 if need_x else p_lo  # the lowest layer whose gradients are needed
    one = np.ones(1, s.dtype)[0]  # 1 in the array dtype
    do = np.empty((1, s.shape[0]), s.dtype)
    for q in range(s.shape[0]):
        do[0, q] = ds[q] * s[q] * (one - s[q])
    if p_lo <= n_mid + 1 < p_hi:
        gbf[0] = do.sum()
        _put(gwf, np.dot(do, hs[n_mid].T))
    if low > n_mid:
        return
    dh = np.dot(wfs.T, do)  # (64, P)
    dz = np.empty_like(dh)
    scratch = np.empty((3, dh.shape[0]), s.dtype)
    for m in range(n_mid - 1, max(low - 1, 0) - 1, -1):
        if p_lo <= m + 1 < p_hi:
            _bn_relu_grad(dh, hs[m + 1], xhat[m], gamma[m], inv[m], dz, ggamma[m], gbeta[m],
                          gbm[m])
            _put(gwm[m], np.dot(dz, hs[m].T))
        else:
            _bn_relu_grad(dh, hs[m + 1], xhat[m], gamma[m], inv[m], dz, scratch[0],
                          scratch[1], scratch[2])
        if m + 1 > low:
            dh = np.dot(wms[m].T, dz)
    if p_lo <= 0 < p_hi:
        for o in range(dh.shape[0]):
            gb0[o] = dh[o].sum()
        _put(gw0, np.dot(dh, cols.T))
    if need_x:
        _col2im(np.dot(w0s.T, dh), k, dx)


@njit(cache=True, fastmath=_FAST, nogil=True)
def _backward(lo, hi, ds, need_x, p_lo, p_hi, k, w0s, wms, gamma, wfs, cols, hs, xhat, inv,
              s, dx, gw0, gb0, gwm, gbm, ggamma, gbeta, gwf, gbf):
    """:func:`_crop_backward` of the tasks lo..hi-1: ds (B, N, P) the gradient w.r.t. the
    probabilities; writes dx (N, B, 3, S, S) and the per-crop parts g* (B, N, ...) of the
    layers p_lo..p_hi-1."""
    n_crops = s.shape[1]
    for t in range(lo, hi):
        b, n = t // n_crops, t % n_crops
        _crop_backward(ds[b, n], need_x, p_lo, p_hi, k, w0s[b], wms[b], gamma[b], wfs[b],
                       cols[b, n], hs[b, n], xhat[b, n], inv[b, n], s[b, n],
                       dx[n, b] if need_x else dx[0, 0], gw0[b, n], gb0[b, n], gwm[b, n],
                       gbm[b, n], ggamma[b, n], gbeta[b, n], gwf[b, n], gbf[b, n])


@njit(cache=True, nogil=True)
def _param_grads(w0, wm, wf, u0, v0, um, vm, uf, vf, sig, gw0, gwm, gwf,
                 dw0, dwm, dwf):
    """Sum the crops' parts in crop order, then through the spectral norm: dw0, dwm, dwf."""
    bsz, n_crops, n_mid = gw0.shape[0], gw0.shape[1], gwm.shape[2]
    for b in range(bsz):
        g0, gf, gm = gw0[b, 0].copy(), gwf[b, 0].copy(), gwm[b, 0].copy()
        for n in range(1, n_crops):
            g0 += gw0[b, n]
            gf += gwf[b, n]
            gm += gwm[b, n]
        _sn_grad(g0, w0[b], u0[b], v0[b], sig[b, 0], dw0[b])
        for m in range(n_mid):
            _sn_grad(gm[m], wm[b, m], um[b, m], vm[b, m], sig[b, 1 + m], dwm[b, m])
        _sn_grad(gf, wf[b], uf[b], vf[b], sig[b, 1 + n_mid], dwf[b])
