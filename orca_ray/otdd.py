"""Optimal-transport dataset distance (OTDD, Alvarez-Melis & Fusi 2020) as ORCA computes it, with caching.

ORCA calls microsoft/otdd as ``DatasetDistance(inner_ot_method='exact', debiased_loss=True,
inner_ot_debiased=True, p=2, inner_ot_p=2, entreg=0.1)``. That defines, for datasets of points z = (x, y):

- label distance W(y, y'): the debiased Sinkhorn divergence (geomloss, ε = 0.1, cost ‖x − x'‖², not halved,
  uniform weights) between the feature clouds of the two classes (``inner="exact"``), or the squared
  Bures–Wasserstein distance between Gaussians fitted to them (``inner="gaussian"``, otdd's
  ``gaussian_approx``; unbiased covariances, as otdd's estimator);
- ground cost C(z, z') = ‖x − x'‖²/2 + W(y, y')/2;
- OTDD = S_ε(α, β) = OT_ε(α, β) − ½ OT_ε(α, α) − ½ OT_ε(β, β), ε = 0.1, uniform weights, with OT_ε the
  entropic dual value ⟨a, f⟩ + ⟨b, g⟩.

`ProxyDistance` computes everything that does not depend on the target once (class clouds, class statistics,
proxy–proxy label distances, the per-class inner self-terms, the proxy self-term of the outer divergence with
its converged potential), so a call pays only for the target; `ProxyDistance.classwise` batches Algorithm 1's
one-class-at-a-time calls. `otdd` is a fresh `ProxyDistance` called once (one code path).

Solver: the log-domain Sinkhorn loops of `orca_ray.sinkhorn` (modes in `SolverOptions`).

Gradients: each OT value comes from one soft-c-transform of detached potentials, so d value / d cost is the
transport plan (envelope theorem); only the target's features (and, if ``detach_label_distances=False``, the
label distances) are in the graph. ``detach_label_distances=True`` is otdd's ``exact`` path (``.item()``);
False is its ``gaussian_approx`` path. In "geomloss" mode a label-distance term sits in both extrapolated
costs (C_xy and C_yx), so, as in otdd + geomloss, it receives the plan twice; "converged" mode gives the exact
gradient (checked against finite differences in tests/test_otdd.py).

Accuracy against microsoft/otdd's values (tests/data/otdd_reference) and speed: benchmarks/README.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import ot
import ot.batch
import torch

from .sinkhorn import (
    SolverOptions,
    _cross_value,
    _grad_scale,
    _self_value,
    _solve_cross,
    _solve_symmetric,
)

__all__ = ["ProxyDistance", "SolverOptions", "otdd"]

Inner = Literal["exact", "gaussian"]


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------


def _features(x, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor or numpy array of shape (n, d), got {type(x).__name__}"
        )
    if x.ndim != 2:
        raise ValueError(
            f"{name} must have shape (n, d), got {tuple(x.shape)}; flatten or mean-pool the features first"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); OTDD needs at least 2 points per class")
    if not x.is_floating_point():
        x = x.to(dtype or torch.float32)
    if not bool(torch.isfinite(x.detach()).all()):
        bad = int((~torch.isfinite(x.detach())).any(1).sum())
        raise ValueError(
            f"{name} has NaN/inf values in {bad} of {x.shape[0]} rows; check the embedder output (lower the learning"
            " rate, or clip) before computing OTDD"
        )
    return x


def _labels(y, n: int, name: str, xname: str, device: torch.device) -> torch.Tensor:
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector of class labels, got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(
            f"{name} has {y.shape[0]} labels but {xname} has {n} rows; pass one label per feature row"
        )
    if y.is_floating_point():
        if not bool((y == y.round()).all()):
            raise ValueError(f"{name} must hold integer class labels, got non-integer floats")
        y = y.long()
    return y.to(device)


@dataclass
class _Classes:
    """A dataset grouped by class: padded clouds and the index maps to rebuild them differentiably."""

    labels: torch.Tensor  # (K,) sorted class labels
    inverse: torch.Tensor  # (n,) class index of each point
    counts: torch.Tensor  # (K,)
    index: torch.Tensor  # (K, m) row index of each cloud slot (padding repeats a valid row)
    logw: torch.Tensor  # (K, m) uniform log-weights per cloud, −inf on padding


def _group(y: torch.Tensor, name: str) -> _Classes:
    labels, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    small = counts < 2
    if bool(small.any()):
        bad = [(int(c), int(k)) for c, k in zip(labels[small].tolist(), counts[small].tolist())]
        desc = ", ".join(f"class {c} has {k} point" for c, k in bad)
        raise ValueError(
            f"{name}: {desc}; OTDD needs at least 2 points per class (a class distance is an OT problem between"
            " point clouds). microsoft/otdd silently drops such classes (min_labelcount=2); drop or merge them"
            " before calling"
        )
    m = int(counts.max())
    order = torch.argsort(inverse, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(m, device=y.device)
    valid = slot.unsqueeze(0) < counts.unsqueeze(1)
    pos = torch.where(valid, starts.unsqueeze(1) + slot.unsqueeze(0), starts.unsqueeze(1))
    index = order[pos]
    logw = torch.where(valid, -torch.log(counts.to(torch.float64)).unsqueeze(1), -math.inf)
    return _Classes(labels, inverse, counts, index, logw)


def _sqdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean costs via POT (batched or not); clamped at 0 against float cancellation."""
    if x.ndim == 2:
        return ot.dist(x, y, metric="sqeuclidean")
    return ot.batch.dist_batch(x, y, metric="sqeuclidean").clamp_min(0.0)


def _all_pairs_sqdist(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """C[s·K + k, i, j] = ‖A[s, i] − B[k, j]‖² for every pair of clouds, A (S, n, d), B (K, m, d) → (S·K, n, m):
    one GEMM on the flattened clouds (``ot.dist``) instead of S·K gathered copies of the clouds."""
    S, n, d = A.shape
    K, m, _ = B.shape
    C = ot.dist(A.reshape(S * n, d), B.reshape(K * m, d), metric="sqeuclidean")
    return C.view(S, n, K, m).transpose(1, 2).reshape(S * K, n, m)


# ----------------------------------------------------------------------------------------------------------
# Gaussian (Bures–Wasserstein) label distances
# ----------------------------------------------------------------------------------------------------------


class _TraceSqrt(torch.autograd.Function):
    """Tr √G for symmetric PSD G (batched), with gradient ½ G^{-1/2} taken on the spectrum: well defined for
    repeated eigenvalues (unlike a matrix-sqrt backward), and eigenvalues below a relative floor get a bounded
    gradient (they come from rank deficiency, e.g. centred data, where the chain rule multiplies them by 0)."""

    @staticmethod
    def forward(ctx, G: torch.Tensor) -> torch.Tensor:
        G = 0.5 * (G + G.transpose(-1, -2))
        lam, U = torch.linalg.eigh(G)
        lam = lam.clamp_min(0.0)
        floor = lam.amax(-1, keepdim=True).clamp_min(torch.finfo(G.dtype).tiny) * 1e-12
        ctx.save_for_backward(U, 0.5 / lam.clamp_min(floor).sqrt())
        return lam.sqrt().sum(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        U, d = ctx.saved_tensors
        return (U * (d * grad.unsqueeze(-1)).unsqueeze(-2)) @ U.transpose(-1, -2)


def _bures_cross(Ls: torch.Tensor, Lt: torch.Tensor) -> torch.Tensor:
    """Tr (Σs^{1/2} Σt Σs^{1/2})^{1/2} for paired factors Σ = L Lᵀ: the nonzero eigenvalues of that matrix are
    those of Bᵀ B, B = Lsᵀ Lt, so the trace is the nuclear norm of B, taken on the smaller Gram matrix.
    Ls (P, d, r), Lt (P, d, q) → (P,). Never forms a d × d square root that needs a gradient."""
    B = Ls.transpose(-1, -2) @ Lt
    G = B @ B.transpose(-1, -2) if B.shape[-2] <= B.shape[-1] else B.transpose(-1, -2) @ B
    return _TraceSqrt.apply(G)


@dataclass
class _Gaussians:
    mean: torch.Tensor  # (K, d)
    trace: torch.Tensor  # (K,) Tr Σ
    factor: torch.Tensor  # (K, d, r) with Σ = L Lᵀ


def _gaussians(x: torch.Tensor, cls: _Classes, use_sqrt: bool) -> _Gaussians:
    """Per-class mean and unbiased covariance (otdd's estimator), kept as a factor L with Σ = L Lᵀ: the centred
    data / √(n−1) (d × n; cheap when classes are smaller than d) or Σ^{1/2} (d × d; proxy side only, where no
    gradient is needed)."""
    X = x[cls.index]  # (K, m, d)
    w = cls.logw.exp().to(x.dtype)  # (K, m): 1/n on valid slots, 0 on padding
    mean = torch.einsum("km,kmd->kd", w, X)
    Xc = (X - mean.unsqueeze(1)) * (w > 0).to(x.dtype).unsqueeze(-1)
    L = Xc.transpose(1, 2) / (cls.counts.to(x.dtype) - 1).sqrt().view(-1, 1, 1)  # (K, d, m)
    trace = (L * L).sum((1, 2))
    if use_sqrt:
        S = L @ L.transpose(1, 2)
        L = ot.backend.get_backend(S).sqrtm(S)
    return _Gaussians(mean, trace, L)


def _bures_wasserstein(
    g1: _Gaussians, i: torch.Tensor, g2: _Gaussians, j: torch.Tensor, block: int
) -> torch.Tensor:
    """Squared 2-Wasserstein distances between Gaussians g1[i] and g2[j] (pairs): ‖μ−μ'‖² + Tr Σ + Tr Σ'
    − 2 Tr(Σ^½ Σ' Σ^½)^½, clamped at 0 as otdd does (relu)."""
    out = []
    per = g1.factor.shape[1] * (g1.factor.shape[2] + g2.factor.shape[2])
    step = max(1, block // per)
    for s in range(0, i.shape[0], step):
        a, b = i[s : s + step], j[s : s + step]
        cross = _bures_cross(g1.factor[a], g2.factor[b])
        dm = ((g1.mean[a] - g2.mean[b]) ** 2).sum(-1)
        bures = (g1.trace[a] + g2.trace[b] - 2 * cross).clamp_min(0)
        out.append((dm + bures).clamp_min(0))
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------------------
# The distance
# ----------------------------------------------------------------------------------------------------------


def _ranges(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cloud coordinate minima and maxima (…, m, d) → (…, d) each, in float64 (padding repeats real points)."""
    X = X.detach().to(torch.float64)
    return X.amin(-2), X.amax(-2)


def _diameter(lo1, hi1, lo2, hi2, extra: float = 0.0) -> np.ndarray:
    """geomloss's ``max_diameter``: the norm of the bounding-box diagonal of both clouds (broadcast over
    problems); ``extra`` adds a squared range (the label coordinate otdd appends in the outer problem)."""
    span = torch.maximum(hi1, hi2) - torch.minimum(lo1, lo2)
    return ((span**2).sum(-1) + extra).sqrt().reshape(-1).cpu().numpy()


class ProxyDistance:
    """OTDD from a fixed proxy dataset (x_source, y_source) to any target, with the proxy-only parts cached.

    ``pd(x_target, y_target)`` is OTDD(proxy, target), a differentiable scalar whose gradient reaches
    ``x_target`` only. ``pd.classwise(x_target, y_target)`` is the vector of OTDD(proxy, target points of
    class k) over the target classes k in sorted label order (ORCA's Algorithm 1), batched.

    Cached at construction: the class clouds (exact) or class means and covariance factors (gaussian), the
    proxy–proxy label distances ``W_source``, the per-class inner self-terms ½OT_ε(A_s, A_s), and the outer
    self-term ½OT_ε(α, α) (``half_self_outer``) with its converged potential (``f_self``). The N × N proxy cost
    is formed once for that (N = 5,000: 100 MB in float32) and freed.

    Args:
        x_source: (N, d) proxy features (torch or numpy).
        y_source: (N,) proxy labels; every class needs at least two points.
        inner: "exact" (entropic-OT label distances, ORCA) or "gaussian" (Bures–Wasserstein).
        entreg: ε of both OT levels (geomloss blur = ε^{1/2}).
        debiased: Sinkhorn divergences at both levels (ORCA), or raw entropic costs.
        p: the ground-cost exponent; 2 only.
        detach_label_distances: True reproduces otdd's ``exact`` path (no gradient through W); False lets W carry
            gradient (otdd's ``gaussian_approx``).
        dtype: precision of the Sinkhorn loops (float32, or float64 for checks).
        solver: Sinkhorn settings (`SolverOptions`; default: reproduce microsoft/otdd).
    """

    def __init__(
        self,
        x_source,
        y_source,
        *,
        inner: Inner = "exact",
        entreg: float = 0.1,
        debiased: bool = True,
        p: int = 2,
        detach_label_distances: bool = True,
        dtype: torch.dtype = torch.float32,
        solver: SolverOptions | None = None,
    ):
        if inner not in ("exact", "gaussian"):
            raise ValueError(f"inner must be 'exact' or 'gaussian', got {inner!r}")
        if p != 2:
            raise ValueError(f"p={p} is not supported; only p=2 (ORCA's and otdd's setting) is implemented")
        if isinstance(entreg, bool) or not isinstance(entreg, int | float) or not 0 < entreg < math.inf:
            raise ValueError(f"entreg must be a positive float (ORCA uses 0.1), got {entreg!r}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.inner, self.eps, self.debiased, self.p = inner, float(entreg), bool(debiased), p
        self.detach_label_distances = bool(detach_label_distances)
        self.dtype = dtype
        self.solver = solver or SolverOptions()

        xs = _features(x_source, "x_source").detach()
        self.device = xs.device
        ys = _labels(y_source, xs.shape[0], "y_source", "x_source", self.device)
        self.dim = xs.shape[1]
        # Costs are translation invariant: centring on the proxy mean keeps ‖x‖² small, which keeps the float32
        # expansion ‖x‖² + ‖y‖² − 2⟨x, y⟩ (one GEMM) accurate.
        self.center = xs.to(torch.float64).mean(0).to(dtype)
        self.x = xs.to(dtype) - self.center
        self.cls = _group(ys, "y_source")
        self.classes = self.cls.labels
        self.n_classes = int(self.cls.labels.shape[0])
        n = self.x.shape[0]
        self.logw = torch.full((1, n), -math.log(n), dtype=dtype, device=self.device)
        self.cls_logw = self.cls.logw.to(dtype)
        self.lo, self.hi = _ranges(self.x)
        self.W_source = self.f_self = self.half_self_outer = None

        with torch.no_grad():
            if inner == "exact":
                self.clouds = self.x[self.cls.index]  # (S, n_max, d), padded
                self.cls_lo, self.cls_hi = _ranges(self.clouds)
                self.half_self = self._half_self(
                    self.clouds, self.cls_logw, self.cls_lo, self.cls_hi, cache=True
                )
            else:
                # Σ^{1/2} factors when the classes have more points than dimensions, else the centred data.
                use_sqrt = self.dim <= int(self.cls.counts.min()) - 1
                self.gauss = _gaussians(self.x.to(torch.float64), self.cls, use_sqrt=use_sqrt)
            if self.debiased:
                if inner == "exact":
                    W = self._cloud_pairs(
                        self.clouds, self.cls_logw, self.half_self, self.cls_lo, self.cls_hi
                    )
                else:
                    W = self._gaussian_pairs(self.gauss)
                self.W_source = W.to(dtype)  # (S, S), symmetric, zero diagonal
                y = self.cls.inverse
                C = (0.5 * _sqdist(self.x, self.x) + 0.5 * self.W_source[y][:, y]).unsqueeze(0)
                diam = _diameter(self.lo, self.hi, self.lo, self.hi, extra=float(self.n_classes - 1) ** 2)
                s = self.solver
                f = _solve_symmetric(C, self.logw, diam, self.eps, s.cache_tol, s.cache_max_iter, s.scaling)
                self.f_self = f[0]
                self.half_self_outer = _self_value(C, self.logw, f, self.eps)[0]
                del C

    # ---- inner (label) distances -------------------------------------------------------------------------

    @property
    def _max_block(self) -> int:
        if self.solver.max_block is not None:
            return self.solver.max_block
        return 1 << 18 if self.device.type == "cpu" else 1 << 26

    def _blocks(self, n_problems: int, per_problem: int) -> list[slice]:
        step = max(1, self._max_block // max(1, per_problem))
        return [slice(i, min(i + step, n_problems)) for i in range(0, n_problems, step)]

    def _half_self(self, clouds, logw, lo, hi, cache: bool) -> torch.Tensor:
        """½OT_ε(A_k, A_k) per padded cloud (K, m, d) under the inner cost ‖x − x'‖²; 0 if not debiased."""
        if not self.debiased:
            return clouds.new_zeros(clouds.shape[0])
        s = self.solver
        tol, max_iter = (s.cache_tol, s.cache_max_iter) if cache else (s.tol, s.max_iter)
        out = []
        for sl in self._blocks(clouds.shape[0], clouds.shape[1] ** 2):
            C1 = _sqdist(clouds[sl], clouds[sl].detach())
            diam = _diameter(lo[sl], hi[sl], lo[sl], hi[sl])
            f = _solve_symmetric(C1.detach(), logw[sl], diam, self.eps, tol, max_iter, s.scaling)
            out.append(_self_value(C1, logw[sl], f, self.eps))
        return torch.cat(out)

    def _ot(
        self, D: torch.Tensor, la: torch.Tensor, lb: torch.Tensor, diam: np.ndarray, W=None
    ) -> torch.Tensor:
        """OT_ε for costs D (+ W): D carries the target's gradient, W (broadcastable) the label distances'."""
        Cx = D.detach() if W is None else D.detach() + W
        CyT = (D if W is None else D + W).transpose(-1, -2).contiguous()
        f, g = _solve_cross(Cx.detach(), CyT.detach(), la, lb, diam, self.eps, self.solver)
        return _cross_value(Cx, CyT, la, lb, f, g, self.eps, self.solver.mode)

    def _symmetric(self, i: torch.Tensor, j: torch.Tensor, K: int, w: torch.Tensor) -> torch.Tensor:
        """The symmetric (K, K) matrix with zero diagonal from its values on the pairs i < j."""
        W = w.new_zeros(K, K)
        return W.index_put((i, j), w).index_put((j, i), w) if w.numel() else W

    def _cloud_pairs(self, clouds, logw, half, lo, hi) -> torch.Tensor:
        """W (K, K) among the padded clouds of one dataset: debiased OT_ε for the pairs i < j only."""
        K = clouds.shape[0]
        i, j = torch.triu_indices(K, K, 1, device=self.device)
        parts = [clouds.new_zeros(0)]
        for sl in self._blocks(i.shape[0], clouds.shape[1] ** 2):
            a, b = i[sl], j[sl]
            diam = _diameter(lo[a], hi[a], lo[b], hi[b])
            parts.append(self._ot(_sqdist(clouds[a], clouds[b]), logw[a], logw[b], diam) - half[a] - half[b])
        return self._symmetric(i, j, K, torch.cat(parts))

    def _gaussian_pairs(self, g: _Gaussians) -> torch.Tensor:
        K = g.mean.shape[0]
        i, j = torch.triu_indices(K, K, 1, device=self.device)
        w = _bures_wasserstein(g, i, g, j, self._max_block) if K > 1 else g.mean.new_zeros(0)
        return self._symmetric(i, j, K, w)

    def _label_distances(self, xt: torch.Tensor, tc: _Classes, pairs: bool):
        """W between every proxy class and every target class (S, K) and, if ``pairs``, among the target
        classes (K, K). Without gradient when ``detach_label_distances`` (otdd's ``.item()``)."""
        S, K = self.n_classes, tc.labels.shape[0]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_label_distances):
            if self.inner == "gaussian":
                gt = _gaussians(xt.to(torch.float64), tc, use_sqrt=False)
                si = torch.arange(S, device=self.device).repeat_interleave(K)
                ti = torch.arange(K, device=self.device).repeat(S)
                W_st = _bures_wasserstein(self.gauss, si, gt, ti, self._max_block).view(S, K)
                W_tt = self._gaussian_pairs(gt) if pairs else None
            else:
                T = xt[tc.index]  # (K, m, d): a differentiable gather of the target classes
                lt = tc.logw.to(self.dtype)
                lo, hi = _ranges(T)
                half_t = self._half_self(T, lt, lo, hi, cache=False)
                n, m = self.clouds.shape[1], T.shape[1]
                cols = []
                for kb in self._blocks(K, S * n * m):
                    k = kb.stop - kb.start
                    D = _all_pairs_sqdist(self.clouds, T[kb])  # (S·k, n, m), problem s·k + j
                    la = self.cls_logw.repeat_interleave(k, 0)
                    lb = lt[kb].repeat(S, 1)
                    diam = _diameter(self.cls_lo[:, None], self.cls_hi[:, None], lo[None, kb], hi[None, kb])
                    cols.append(self._ot(D, la, lb, diam).view(S, k))
                W_st = torch.cat(cols, 1) - self.half_self.unsqueeze(1) - half_t.unsqueeze(0)
                W_tt = self._cloud_pairs(T, lt, half_t, lo, hi) if pairs else None
        return W_st.to(self.dtype), (None if W_tt is None else W_tt.to(self.dtype))

    # ---- the outer problem -------------------------------------------------------------------------------

    def _target(self, x_target, y_target) -> tuple[torch.Tensor, _Classes]:
        xt = _features(x_target, "x_target")
        if xt.shape[1] != self.dim:
            raise ValueError(
                f"x_target has feature dimension {xt.shape[1]} but the proxy (x_source) has {self.dim}; the target"
                " features must live in the proxy's feature space (same body, same pooling)"
            )
        if xt.device != self.device:
            raise ValueError(
                f"x_target is on {xt.device} but the proxy is on {self.device}; move one of them"
                f" (e.g. x_target.to('{self.device}'))"
            )
        yt = _labels(y_target, xt.shape[0], "y_target", "x_target", self.device)
        return xt.to(self.dtype) - self.center, _group(yt, "y_target")

    def _outer(self, D, Wx, lt, Dyy, Wyy, diam) -> torch.Tensor:
        """S_ε(α, β_b) for a batch of targets. D (B, N, m) = ‖x − y‖²/2 (gradient to y), Wx (B, N, 1 or m) =
        W/2 between the proxy points' and the target points' classes, Dyy (B, m, m) = ‖y − y'.detach()‖²/2,
        Wyy (B, m, m) or None = W/2 among target classes, lt (B, m) target log-weights."""
        s = self.solver
        la = self.logw.expand(D.shape[0], -1)
        value = self._ot(D, la, lt, diam, W=Wx)
        if self.debiased:
            if Wyy is not None:
                # geomloss (both sides see W) vs the envelope gradient of ½OT(β, β), which is half the plan
                Dyy = Dyy + (Wyy if s.mode == "geomloss" else _grad_scale(Wyy, 0.5))
            fy = _solve_symmetric(Dyy.detach(), lt, diam, self.eps, s.tol, s.max_iter, s.scaling)
            value = value - self.half_self_outer - _self_value(Dyy, lt, fy, self.eps)
        return value

    def _out_dtype(self, x_target) -> torch.dtype:
        if isinstance(x_target, torch.Tensor) and x_target.is_floating_point():
            return x_target.dtype
        return self.dtype

    # ---- public ------------------------------------------------------------------------------------------

    def __call__(self, x_target, y_target) -> torch.Tensor:
        """OTDD(proxy, target) with the target as one dataset (all its classes together): a scalar."""
        xt, tc = self._target(x_target, y_target)
        K, M = tc.labels.shape[0], xt.shape[0]
        W_st, W_tt = self._label_distances(xt, tc, pairs=self.debiased and K > 1)
        k = tc.inverse
        D = (0.5 * _sqdist(self.x, xt)).unsqueeze(0)
        Wx = (0.5 * W_st[self.cls.inverse][:, k]).unsqueeze(0)
        Dyy = (0.5 * _sqdist(xt, xt.detach())).unsqueeze(0) if self.debiased else None
        Wyy = (0.5 * W_tt[k][:, k]).unsqueeze(0) if W_tt is not None else None
        lt = torch.full((1, M), -math.log(M), dtype=self.dtype, device=self.device)
        lo, hi = _ranges(xt)
        # otdd appends the label as a coordinate: proxy classes 0..S−1, target classes S..S+K−1.
        diam = _diameter(self.lo, self.hi, lo, hi, extra=float(self.n_classes + K - 1) ** 2)
        return self._outer(D, Wx, lt, Dyy, Wyy, diam)[0].to(self._out_dtype(x_target))

    def classwise(self, x_target, y_target) -> torch.Tensor:
        """(OTDD(proxy, {x_target[i] : y_target[i] = k}))_k over the sorted target labels k, shape (K,).
        Batched: one inner solve for all (proxy class, target class) pairs, stacked outer solves.

        Args:
            x_target: (M, d) target features (gradient flows to them).
            y_target: (M,) target labels; every class needs at least two points.
        """
        xt, tc = self._target(x_target, y_target)
        K = tc.labels.shape[0]
        W_st, _ = self._label_distances(xt, tc, pairs=False)
        T = xt[tc.index]  # (K, m, d), padded
        lt = tc.logw.to(self.dtype)
        lo, hi = _ranges(T)
        Wx = 0.5 * W_st.t()[:, self.cls.inverse].unsqueeze(-1)  # (K, N, 1): one target class per problem
        out = []
        for kb in self._blocks(K, self.x.shape[0] * T.shape[1]):
            D = 0.5 * _all_pairs_sqdist(self.x.unsqueeze(0), T[kb])
            Dyy = 0.5 * _sqdist(T[kb], T[kb].detach()) if self.debiased else None  # W(k, k) = 0
            diam = _diameter(self.lo, self.hi, lo[kb], hi[kb], extra=float(self.n_classes) ** 2)
            out.append(self._outer(D, Wx[kb], lt[kb], Dyy, None, diam))
        return torch.cat(out).to(self._out_dtype(x_target))


def otdd(
    x_source,
    y_source,
    x_target,
    y_target,
    *,
    inner: Inner = "exact",
    entreg: float = 0.1,
    debiased: bool = True,
    p: int = 2,
    detach_label_distances: bool = True,
    dtype: torch.dtype = torch.float32,
    solver: SolverOptions | None = None,
) -> torch.Tensor:
    """OTDD between (x_source, y_source) and (x_target, y_target): a differentiable scalar (gradient to
    x_target only). Builds a `ProxyDistance` and calls it once.

    Args:
        x_source, y_source: the proxy features (N, d) and labels (N,).
        x_target, y_target: the target features (M, d) and labels (M,).
        inner, entreg, debiased, p, detach_label_distances, dtype, solver: as for `ProxyDistance`.
    """
    pd = ProxyDistance(
        x_source,
        y_source,
        inner=inner,
        entreg=entreg,
        debiased=debiased,
        p=p,
        detach_label_distances=detach_label_distances,
        dtype=dtype,
        solver=solver,
    )
    return pd(x_target, y_target)
