"""Adaptive weighted parameter fusion (AWPF; J. Guo et al., "Adaptive Weighted Parameter Fusion with CLIP for
Class-Incremental Learning"): a low-rank parameter module on frozen CLIP image features, stacking-based
fusion of the modules of successive tasks, and a balance factor from MMD and LDA.

No code of the paper is released and its equations are not public: everything below is *our reading of the
abstract*, built on its closest open ancestor, RAPF (Huang et al., ECCV 2024, "Class-Incremental Learning with
CLIP: Adaptive Representation Adjustment and Parameter Fusion"; code ``linlany/RAPF``): a 512x512 linear
adapter after the frozen image encoder, fused after each task with the previous one using a mixing bias of
0.6. Each equation is marked (A1)-(A6); every choice that is ours says so.

**(A1) The parameter module** (our choice: a residual low-rank linear map). For a frozen, L2-normalised CLIP
image feature ``f`` (``D``-dim)::

    g(f) = normalize(f + dW f),     dW = B A,     A: (r, D),  B: (D, r)

RAPF's adapter is a full ``D x D`` matrix ``W``; writing ``W = I + B A`` keeps its function class for
``r = D``, starts at zero-shot CLIP when ``B = 0`` (as LoRA, Hu et al. 2022), and turns "stacking
parameters" into something concrete: low-rank factors can be stacked side by side (A2).

**(A2) Stacking-based fusion.** Two updates ``dW_o = B_o A_o`` (old) and ``dW_n = B_n A_n`` (new) are fused
with weight ``lam`` on the new one (``lam`` has RAPF's meaning of ``mix_bias``: the share of the new weights)::

    dW = (1 - lam) dW_o + lam dW_n = [(1 - lam) B_o, lam B_n] @ [A_o; A_n]

The fused factors are the stacked factors, so the rank grows to ``r_o + r_n`` and nothing is averaged away:
``g`` of the fused module equals the mixture of the two modules' updates exactly (:func:`stack`).

**(A3) Compression keeping "all the effective information".** Stacking can produce redundant directions
(e.g. when the new module contains the old one). :func:`compress` computes the thin SVD
``dW = U S V^T`` from the factors (QR of ``B`` and ``A^T``, then the SVD of a small ``k x k`` core; no
``D x D`` product is needed) and keeps every direction whose singular value exceeds ``rtol * s_max``: only
numerically-zero directions are dropped, so the function is unchanged (our reading of "retains all the
effective information of the parameter matrix"). An optional ``max_rank`` budget keeps the top singular
directions, the best rank-``k`` approximation (Eckart-Young), with error
``||dW - dW_k||_F = sqrt(sum of the dropped s_i^2)``.

**(A4) Distribution shift between adjacent tasks: MMD.** With samples ``X`` (previous task, ``m``) and ``Y``
(new task, ``n``) and the Gaussian kernel ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``, the biased
(V-statistic) estimator of Gretton et al. (JMLR 2012, eq. 5)::

    MMD^2 = mean_{i,i'} k(x_i, x_i') + mean_{j,j'} k(y_j, y_j') - 2 mean_{i,j} k(x_i, y_j)   in [0, 2]

``sigma`` is the median pairwise distance of the pooled sample (the median heuristic, Gretton et al. 2012,
sec. 8). The biased estimator is never negative, is exactly 0 for identical samples and is symmetric.

**(A5) Class separability: LDA.** With class means ``mu_c``, ``N_c`` samples of class ``c``, ``N`` in all,
``C`` classes and the weighted mean of the class means ``mu = sum_c (N_c / N) mu_c``::

    S_w = (1/N) sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T            within-class scatter
    S_b = (1/N) sum_c N_c (mu_c - mu)(mu_c - mu)^T                     between-class scatter
    S_w' = (1 - gamma) S_w + gamma (tr(S_w) / D) I                    shrinkage towards a sphere
    J_1 >= ... >= J_q:  eigenvalues of S_w'^{-1} S_b,  q = min(C - 1, D)
    rho = (1/q) sum_i J_i / (1 + J_i)   in [0, 1)                      "separability"

``J_i`` is the Fisher ratio (between- over within-class variance) along LDA's ``i``-th discriminant direction
(Fukunaga 1990, ch. 10); ``J_i / (1 + J_i)`` is the share of the variance along it that the class explains
(a squared canonical correlation), so ``rho`` is Pillai's trace divided by ``q``: 0 when the class means
coincide, towards 1 when the classes are tight and far apart. Our choices: this bounded form rather than
``tr(S_w'^{-1} S_b)`` itself (:func:`lda_score`, unbounded and growing with ``D``), and the shrinkage
``gamma = 0.5``, which makes ``S_w`` invertible when ``N < D`` (a task of 10 classes has fewer training images
than CLIP has dimensions in the fast profile). LDA needs only the class means, the class sizes and the pooled
within-class scatter, so it can be computed from kept class statistics instead of kept features
(:func:`separability_from_statistics`, equal to :func:`separability` on the same data). It needs at least
two classes (with one, ``S_b = 0``).

**(A6) The balance factor** (our choice of function and of what LDA is measured on; the abstract only says that
it "balances the data distribution alignment and distinguishability of adjacent tasks")::

    lam_t = sigmoid(logit(lam_0) + alpha * MMD^2(t-1, t) + beta * (1 - rho_{<=t}))

``lam_t`` is the weight of task ``t``'s module in (A2); ``rho_{<=t}`` is the separability (A5) of *all the
classes seen up to task t*, the new task's and the earlier ones', in the frozen CLIP features, computed from
the class statistics every method keeps for replay. Alignment: ``lam`` *grows* with the shift ``MMD^2``
between the adjacent tasks, because a new task far from the previous one occupies another region of feature
space, so its update disturbs the old task less and can be absorbed more. Distinguishability: ``lam``
*grows* as the seen classes get harder to tell apart in the frozen features (``rho_{<=t}`` falls as classes
crowd in): the frozen features then do less of the separating and the module has to do more, so the new
task's update is damped less. Perfectly separable classes and identical adjacent tasks get ``lam_0``.
``lam_0 = 0.45``, ``alpha = 4`` and ``beta = 3`` are in :class:`BalanceConfig` (our choice, on ``cil-emoji``
seeds other than the ones we report: ``docs/results_notes.md``).

Our choice of the *whole seen set* for ``rho`` (rather than the new task's separability against the previous
task's, which we tried first) and what we measured on the way: ``docs/results_notes.md`` (AWPF, the balance
factor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


class FusionError(ValueError):
    """Misuse of the fusion functions (shapes that do not fit, too few classes, empty samples)."""


@dataclass(frozen=True)
class LowRankUpdate:
    """A low-rank update ``dW = B @ A`` of ``D``-dim features (A1).

    Attributes:
        A: ``(r, D)`` down-projection.
        B: ``(D, r)`` up-projection.
    """

    A: torch.Tensor
    B: torch.Tensor

    def __post_init__(self) -> None:
        check_update(self, "update")

    @classmethod
    def zeros(cls, dim: int, *, dtype=torch.float32, device=None) -> "LowRankUpdate":
        """The rank-0 update of ``dim``-dim features (zero-shot CLIP)."""
        return cls(torch.zeros(0, dim, dtype=dtype, device=device), torch.zeros(dim, 0, dtype=dtype, device=device))

    @property
    def dim(self) -> int:
        return self.A.shape[1]

    @property
    def rank(self) -> int:
        """Number of stacked directions (an upper bound of the matrix rank)."""
        return self.A.shape[0]

    def matrix(self) -> torch.Tensor:
        """The ``(D, D)`` matrix ``B @ A``."""
        return self.B @ self.A

    def apply(self, features: torch.Tensor) -> torch.Tensor:
        """``dW f`` for each row ``f`` of ``features (N, D)``, without forming ``dW``: ``(N, D)``."""
        return (features @ self.A.T) @ self.B.T

    def detach(self) -> "LowRankUpdate":
        return LowRankUpdate(self.A.detach(), self.B.detach())

    def to(self, device) -> "LowRankUpdate":
        return LowRankUpdate(self.A.to(device), self.B.to(device))


def check_update(update: LowRankUpdate, what: str) -> None:
    """Raise :class:`FusionError` unless ``update.A`` is ``(r, D)`` and ``update.B`` is ``(D, r)``."""
    A, B = update.A, update.B
    if A.ndim != 2 or B.ndim != 2 or B.shape != (A.shape[1], A.shape[0]):
        raise FusionError(
            f"{what}: A must be (r, D) and B (D, r) with the same r and D; got A {tuple(A.shape)} and "
            f"B {tuple(B.shape)}"
        )


def adapt(features: torch.Tensor, update: LowRankUpdate) -> torch.Tensor:
    """The module's output (A1): ``normalize(f + B A f)`` for each row of ``features (N, D)``."""
    if features.shape[-1] != update.dim:
        raise FusionError(f"features have {features.shape[-1]} dims, the module expects {update.dim}")
    return F.normalize(features + update.apply(features), dim=-1)


# ----- (A2) stacking and (A3) compression --------------------------------------------------------------------
def stack(old: LowRankUpdate, new: LowRankUpdate, lam: float) -> LowRankUpdate:
    """Fuse two updates by stacking their factors (A2): ``(1 - lam) dW_old + lam dW_new``, rank ``r_o + r_n``.

    Raises:
        FusionError: the updates act on features of different widths ``D``, their factors are malformed, or
            ``lam`` is outside ``[0, 1]``.
    """
    check_update(old, "old update")
    check_update(new, "new update")
    if old.dim != new.dim:
        raise FusionError(
            f"cannot fuse a module on {old.dim}-dim features (A {tuple(old.A.shape)}, B {tuple(old.B.shape)}) "
            f"with one on {new.dim}-dim features (A {tuple(new.A.shape)}, B {tuple(new.B.shape)}): both must "
            "come from the same CLIP model"
        )
    if not 0.0 <= float(lam) <= 1.0:
        raise FusionError(f"the balance factor lam must lie in [0, 1], got {lam}")
    A = torch.cat([old.A, new.A.to(old.A)], dim=0)
    B = torch.cat([(1.0 - lam) * old.B, lam * new.B.to(old.B)], dim=1)
    return LowRankUpdate(A, B)


def concat(*updates: LowRankUpdate) -> LowRankUpdate:
    """The sum ``dW_1 + dW_2 + ...`` as one stacked update (factors side by side, weight 1 each)."""
    if not updates:
        raise FusionError("concat needs at least one update")
    dims = {u.dim for u in updates}
    if len(dims) != 1:
        raise FusionError(f"cannot add modules on features of different widths {sorted(dims)}")
    return LowRankUpdate(torch.cat([u.A for u in updates], dim=0), torch.cat([u.B for u in updates], dim=1))


def singular_values(update: LowRankUpdate) -> torch.Tensor:
    """The singular values of ``B @ A``, largest first (``min(r, D)`` of them), from the factors only."""
    return _thin_svd(update)[1].to(update.A.dtype)


def _thin_svd(update: LowRankUpdate) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U (D, k), S (k,), V (D, k)`` with ``B A = U diag(S) V^T``, in float64 (A3)."""
    A, B = update.A.double(), update.B.double()
    q_b, r_b = torch.linalg.qr(B)  # B = Q_b R_b,  Q_b (D, k)
    q_a, r_a = torch.linalg.qr(A.T)  # A^T = Q_a R_a
    u, s, vh = torch.linalg.svd(r_b @ r_a.T)  # the small core: B A = Q_b (R_b R_a^T) Q_a^T
    return q_b @ u, s, q_a @ vh.T


def compress(update: LowRankUpdate, *, max_rank: int | None = None, rtol: float = 1e-6) -> LowRankUpdate:
    """Re-factor ``B @ A`` by its SVD (A3), dropping directions with ``s_i <= rtol * s_max`` and, when
    ``max_rank`` is set, all but the ``max_rank`` largest. Returns balanced factors ``B = U sqrt(S)``,
    ``A = sqrt(S) V^T``; the error is ``sqrt(sum of the dropped s_i^2)`` in Frobenius norm.

    Raises:
        FusionError: malformed factors or ``max_rank < 0``.
    """
    check_update(update, "update")
    if max_rank is not None and max_rank < 0:
        raise FusionError(f"max_rank must be >= 0, got {max_rank}")
    if update.rank == 0:
        return update
    u, s, v = _thin_svd(update)
    keep = int((s > rtol * s[0]).sum()) if s[0] > 0 else 0
    if max_rank is not None:
        keep = min(keep, max_rank)
    root = s[:keep].sqrt()
    dtype = update.A.dtype
    return LowRankUpdate((root[:, None] * v[:, :keep].T).to(dtype), (u[:, :keep] * root).to(dtype))


# ----- (A4) MMD, (A5) LDA, (A6) the balance factor ------------------------------------------------------------
def _check_sample(x: torch.Tensor, what: str) -> None:
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise FusionError(f"{what} must be a non-empty (N, D) matrix of features, got shape {tuple(x.shape)}")


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> float:
    """The median heuristic (A4): the median pairwise distance of the pooled sample (1.0 if all coincide)."""
    z = torch.cat([x, y]).double()
    d = torch.cdist(z, z)
    off = d[~torch.eye(len(z), dtype=torch.bool)]
    median = float(off.median()) if off.numel() else 0.0
    return median if median > 0 else 1.0


def mmd2(x: torch.Tensor, y: torch.Tensor, *, bandwidth: float | None = None) -> float:
    """Biased Gaussian-kernel MMD^2 between samples ``x (m, D)`` and ``y (n, D)`` (A4), in ``[0, 2]``.

    Args:
        bandwidth: kernel width ``sigma``; None uses the median heuristic on the pooled sample.

    Raises:
        FusionError: an empty sample, or samples of different widths.
    """
    _check_sample(x, "the first sample")
    _check_sample(y, "the second sample")
    if x.shape[1] != y.shape[1]:
        raise FusionError(f"MMD needs samples of the same width, got {x.shape[1]} and {y.shape[1]}")
    x, y = x.detach().cpu().double(), y.detach().cpu().double()
    sigma = bandwidth if bandwidth is not None else median_bandwidth(x, y)

    def kernel_mean(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / (2.0 * sigma**2)).mean()

    value = kernel_mean(x, x) + kernel_mean(y, y) - 2.0 * kernel_mean(x, y)
    return max(float(value), 0.0)


def _scatter(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(S_w, S_b, C)`` of (A5) in float64, after checking the inputs."""
    _check_sample(features, "features")
    labels = torch.as_tensor(labels).cpu()
    if labels.shape != (features.shape[0],):
        raise FusionError(f"need one label per feature row: {features.shape[0]} rows, labels {tuple(labels.shape)}")
    classes = labels.unique()
    if len(classes) < 2:
        raise FusionError(
            f"LDA separability needs at least two classes, got {len(classes)}: with one class the between-class "
            "scatter is zero. Give each task two or more classes, or use a fixed balance factor (awpf-fixed)."
        )
    x = features.detach().cpu().double()
    n, dim = x.shape
    s_w = torch.zeros(dim, dim, dtype=x.dtype)
    s_b = torch.zeros(dim, dim, dtype=x.dtype)
    for c in classes:
        xc = x[labels == c]
        diff = xc - xc.mean(dim=0)
        s_w += diff.T @ diff / n
        gap = (xc.mean(dim=0) - x.mean(dim=0))[:, None]
        s_b += len(xc) / n * (gap @ gap.T)
    return s_w, s_b, len(classes)


def fisher_ratios(features: torch.Tensor, labels: torch.Tensor, *, shrinkage: float = 0.5) -> torch.Tensor:
    """The ``q = min(C - 1, D)`` Fisher ratios ``J_i`` of LDA with shrinkage (A5), largest first.

    Raises:
        FusionError: empty features, labels that do not match, a shrinkage outside ``(0, 1]``, or fewer than
            two classes (the between-class scatter of one class is zero, so LDA is undefined).
    """
    _check_shrinkage(shrinkage)
    s_w, s_b, n_classes = _scatter(features, labels)
    return _fisher_from_scatter(s_w, s_b, n_classes, shrinkage)


def _check_shrinkage(shrinkage: float) -> None:
    if not 0.0 < shrinkage <= 1.0:
        raise FusionError(f"shrinkage must lie in (0, 1], got {shrinkage}")


def _fisher_from_scatter(s_w: torch.Tensor, s_b: torch.Tensor, n_classes: int, shrinkage: float) -> torch.Tensor:
    """Eigenvalues of ``S_w'^{-1} S_b`` (A5) from the two scatter matrices, largest ``min(C - 1, D)`` first."""
    dim = s_w.shape[0]
    scale = float(torch.trace(s_w)) / dim
    if scale <= 0:  # every sample sits on its class mean: perfectly separable, keep the solve defined
        scale = 1e-12 * (float(torch.trace(s_b)) / dim + 1.0)
    s_w = (1.0 - shrinkage) * s_w + shrinkage * scale * torch.eye(dim, dtype=s_w.dtype)
    # Symmetric form of the generalised eigenproblem: S_w' = L L^T, eigenvalues of L^-1 S_b L^-T.
    chol = torch.linalg.cholesky(s_w)
    half = torch.linalg.solve_triangular(chol, s_b, upper=False)
    core = torch.linalg.solve_triangular(chol, half.T, upper=False)
    ratios = torch.linalg.eigvalsh((core + core.T) / 2).flip(0).clamp(min=0.0)
    return ratios[: min(n_classes - 1, dim)]


def lda_score(features: torch.Tensor, labels: torch.Tensor, *, shrinkage: float = 0.5) -> float:
    """The classical LDA criterion ``tr(S_w'^{-1} S_b) / q``, the mean Fisher ratio (unbounded)."""
    return float(fisher_ratios(features, labels, shrinkage=shrinkage).mean())


def separability(features: torch.Tensor, labels: torch.Tensor, *, shrinkage: float = 0.5) -> float:
    """``rho = mean_i J_i / (1 + J_i)`` in ``[0, 1)`` (A5): Pillai's trace of LDA divided by ``q``."""
    ratios = fisher_ratios(features, labels, shrinkage=shrinkage)
    return float((ratios / (1.0 + ratios)).mean())


def separability_from_statistics(means: torch.Tensor, within_scatter: torch.Tensor, counts: torch.Tensor, *,
                                 shrinkage: float = 0.5) -> float:
    """``rho`` (A5) from class statistics instead of features: the class means ``(C, D)``, the pooled
    within-class scatter ``S_w (D, D)`` (the sum of the classes' scatter divided by ``N``) and the class sizes
    ``(C,)``. Equal to :func:`separability` of the features the statistics were taken from.

    Raises:
        FusionError: fewer than two classes, or shapes that do not fit together.
    """
    _check_shrinkage(shrinkage)
    means, s_w = means.detach().cpu().double(), within_scatter.detach().cpu().double()
    counts = torch.as_tensor(counts).detach().cpu().double()
    n_classes, dim = means.shape if means.ndim == 2 else (0, 0)
    if n_classes < 2:
        raise FusionError(
            f"LDA separability needs at least two classes, got {n_classes}: with one class the between-class "
            "scatter is zero. Let the first task have two or more classes, or use a fixed balance factor "
            "(awpf-fixed)."
        )
    if s_w.shape != (dim, dim) or counts.shape != (n_classes,) or bool((counts <= 0).any()):
        raise FusionError(f"need (C, D) means, a (D, D) scatter and C positive class sizes; got means "
                          f"{tuple(means.shape)}, scatter {tuple(s_w.shape)}, sizes {tuple(counts.shape)}")
    weights = counts / counts.sum()
    gaps = means - weights @ means
    s_b = (gaps * weights[:, None]).T @ gaps
    ratios = _fisher_from_scatter(s_w, s_b, n_classes, shrinkage)
    return float((ratios / (1.0 + ratios)).mean())


@dataclass(frozen=True)
class BalanceConfig:
    """The weights of the balance factor (A6),
    ``lam = sigmoid(logit(lam_0) + alpha MMD^2 + beta (1 - rho_seen))``.

    Attributes:
        lam_0: ``lam`` for identical adjacent tasks whose classes are perfectly separable (our choice, 0.45,
            chosen with ``alpha`` and ``beta``; see the module docstring).
        alpha: weight of the distribution shift ``MMD^2`` (in [0, 2]); larger absorbs shifted tasks more.
        beta: weight of the lack of separability ``1 - rho`` of the seen classes (in (0, 1]); larger gives the
            new task's module more weight as the classes crowd the frozen feature space.
        shrinkage: ``gamma`` of the within-class scatter in (A5).
    """

    lam_0: float = 0.45
    alpha: float = 4.0
    beta: float = 3.0
    shrinkage: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.lam_0 < 1.0:
            raise FusionError(f"lam_0 must lie in (0, 1), got {self.lam_0}")
        if self.alpha < 0 or self.beta < 0:
            raise FusionError(f"alpha and beta must be >= 0, got {self.alpha} and {self.beta}")


def balance_factor(shift: float, seen_separation: float, config: BalanceConfig = BalanceConfig()) -> float:
    """``lam`` in (0, 1) (A6) from ``shift = MMD^2`` of the adjacent tasks and the separability ``rho`` of all
    the classes seen so far: increasing in the shift, decreasing in the separability."""
    z = math.log(config.lam_0 / (1.0 - config.lam_0)) + config.alpha * shift + config.beta * (1.0 - seen_separation)
    return 1.0 / (1.0 + math.exp(-z))


def dynamic_balance(previous: torch.Tensor, new: torch.Tensor, seen_separation: float,
                    config: BalanceConfig = BalanceConfig()) -> tuple[float, float]:
    """``(lam, MMD^2)`` (A4, A6) for fusing a task whose features are ``new (n, D)`` after a previous task with
    (sampled) features ``previous (m, D)``, when the classes seen so far (the new task's included) have
    separability ``seen_separation`` (A5, e.g. :func:`separability_from_statistics`)."""
    shift = mmd2(previous, new)
    return balance_factor(shift, seen_separation, config), shift
