"""Slow, loop-by-loop evaluation of SOART.md, written independently of the
package (plain Python loops and np.linalg.inv), used as the golden reference."""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-4


def patches(img, k, s):
    h, w = img.shape
    nh, nw = (h - k) // s + 1, (w - k) // s + 1
    out = []
    for i in range(nh):
        for j in range(nw):
            out.append([float(img[i * s + a, j * s + b]) for a in range(k) for b in range(k)])
    return np.array(out), (nh, nw)


def soart3(y, x, eps=EPS):
    xy = sum(a * b for a, b in zip(x, y))
    xx = sum(a * a for a in x)
    beta = (xy + eps) / (xx + eps)
    r = [yy - beta * xv for yy, xv in zip(y, x)]
    eta = sum(abs(v) for v in r)
    nu = max(abs(v) for v in r)
    return np.array(
        [math.log(max(beta, 1e-12)), math.log(eta + 1), math.log(nu + 1) - math.log(eta + 1)]
    )


def similarity(p, eps=EPS):
    n = len(p)
    s = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            s[i, j] = (float(np.dot(p[i], p[j])) + eps) / (float(np.dot(p[j], p[j])) + eps)
    return s


def mahalanobis_stage(train_f, test_f, reg_rel=1e-6, reg_abs=1e-12):
    """Per patch: mean, ddof=1 covariance + ridge, D² = dᵀΣ⁻¹d/m (explicit inverse)."""
    _n, p, m = train_f.shape
    out = np.empty(test_f.shape[:2])
    for i in range(p):
        mu = train_f[:, i].mean(axis=0)
        cov = np.cov(train_f[:, i].T, ddof=1).reshape(m, m)
        cov = cov + (reg_rel * np.trace(cov) / m + reg_abs) * np.eye(m)
        inv = np.linalg.inv(cov)
        for t in range(test_f.shape[0]):
            d = test_f[t, i] - mu
            out[t, i] = d @ inv @ d / m
    return out


def soartc(train, test, k, s):
    tp = [patches(im, k, s)[0] for im in train]
    grid = patches(train[0], k, s)[1]
    sims = [similarity(p) for p in tp]
    sbar = sum(sims) / len(sims)
    feats = lambda sim: np.array([soart3(sim[i], sbar[i]) for i in range(len(sim))])
    tr_f = np.array([feats(sm) for sm in sims])
    te_f = np.array([feats(similarity(patches(im, k, s)[0])) for im in test])
    return mahalanobis_stage(tr_f, te_f).reshape(len(test), *grid)


def soart3map(train, test, k, s):
    mean = sum(train) / len(train)
    mp, grid = patches(mean, k, s)
    f = lambda im: np.array([soart3(p, m) for p, m in zip(patches(im, k, s)[0], mp)])
    return mahalanobis_stage(
        np.array([f(im) for im in train]), np.array([f(im) for im in test])
    ).reshape(len(test), *grid)


def rt_items(y, m):
    k = len(y)
    L = float(np.dot(m, y))
    r = float(np.dot(m, m))
    st = float(np.dot(y, y))
    se = st - L * L / r
    return np.array([L / r, math.sqrt(max(se, 0.0) / (k - 1))])


def rt(train, test, k, s):
    tp = [patches(im, k, s)[0] for im in train]
    grid = patches(train[0], k, s)[1]
    mean = sum(tp) / len(tp)
    f = lambda p: np.array([rt_items(p[i], mean[i]) for i in range(len(p))])
    tr = np.array([f(p) for p in tp])
    te = np.array([f(patches(im, k, s)[0]) for im in test])
    return mahalanobis_stage(tr, te).reshape(len(test), *grid)


def _nearest_covered(pos, n, k, s):
    covered = [p for i in range(n) for p in range(i * s, i * s + k)]
    return min(covered, key=lambda c: (abs(c - pos), c))


def fold(values, shape, k, s):
    nh, nw = values.shape
    h, w = shape
    out = np.empty(shape)
    for y in range(h):
        for x in range(w):
            yy, xx = _nearest_covered(y, nh, k, s), _nearest_covered(x, nw, k, s)
            acc, cnt = 0.0, 0
            for i in range(nh):
                for j in range(nw):
                    if i * s <= yy < i * s + k and j * s <= xx < j * s + k:
                        acc += values[i, j]
                        cnt += 1
            out[y, x] = acc / cnt
    return out
