"""Block compressive sensing (BCS), as in the ReconNet / ISTA-Net(+) / NesTD protocol.

The image is cut into non-overlapping ``B x B`` blocks (``B = 33`` in ReconNet, Kulkarni et al.
CVPR 2016, and ISTA-Net+, Zhang & Ghanem CVPR 2018) and every vectorised block ``x_i`` (length
``N = C B^2``) is measured with the same ``M x N`` matrix: ``y_i = Phi x_i``. The sampling ratio
is ``M / N``. Implemented as a stride-``B`` convolution with the ``(M, C, B, B)`` kernel
``Phi.reshape(M, C, B, B)`` (blocks vectorised row-major, ``(c, row, col)``, as ISTA-Net+'s
PyTorch code does), its adjoint as the matching transposed convolution -- so the matrix can be
learned end to end (e.g. the learned sampling of OPINE-Net / later unfolding networks).

Shapes: ``x`` ``(batch, C, H, W)`` with ``H`` and ``W`` multiples of ``B`` (use
:func:`pad_to_block` / :func:`crop`), ``y`` ``(batch, M, H / B, W / B)``: channel ``m`` of ``y``
at block position ``(i, j)`` is measurement ``m`` of that block.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from irc.operators.linear import LinearOperator, batch_param

__all__ = ["BlockCS", "num_measurements", "pad_to_block", "crop", "STANDARD_M_33"]

# Measurements per 33x33 block used by ReconNet and ISTA-Net+ (and the papers that reuse their
# Phi matrices, e.g. NesTD): their ``ratio -> M`` table. No single rounding rule reproduces it
# (1%: 10.89 -> 10 and 4%: 43.56 -> 43 are floored, but 10%: 108.9 -> 109, 30%: 326.7 -> 327,
# 40%: 435.6 -> 436, 50%: 544.5 -> 545 are rounded up), so the table is kept explicitly.
STANDARD_M_33: dict[int, int] = {1: 10, 4: 43, 10: 109, 25: 272, 30: 327, 40: 436, 50: 545}


def num_measurements(ratio: float, n: int) -> int:
    """Number of measurements ``M`` per block for a sampling ratio.

    Rule: for ``n = 1089`` (one 33x33 grey block) and a ratio within 1e-9 of 1, 4, 10, 25,
    30, 40 or 50 percent, the ReconNet / ISTA-Net+ value of :data:`STANDARD_M_33`; otherwise
    ``floor(ratio * n + 0.5)`` (round half up), at least 1 and at most ``n``. The two rules
    agree except at 1% (11 vs 10) and 4% (44 vs 43).

    Args:
        ratio: sampling ratio ``M / n`` in ``(0, 1]``.
        n: block length ``C * B * B``.

    Returns:
        ``M``.
    """
    if not (0.0 < ratio <= 1.0):
        raise ValueError(f"sampling ratio must be in (0, 1], got {ratio}")
    if n == 33 * 33:
        pct = ratio * 100.0
        for p, m in STANDARD_M_33.items():
            if abs(pct - p) < 1e-7:
                return m
    return int(min(n, max(1, math.floor(ratio * n + 0.5))))


def pad_to_block(x: Tensor, block: int = 33, mode: str = "constant") -> tuple[Tensor, tuple[int, int]]:
    """Pad the bottom/right of ``x`` so that ``H`` and ``W`` are multiples of ``block``.

    ISTA-Net+ pads test images with zeros to a multiple of 33 and crops after reconstruction;
    ``mode`` is passed to :func:`torch.nn.functional.pad` (``"constant"`` = zeros).

    Args:
        x: ``(batch, C, H, W)``.
        block: block size ``B``.

    Returns:
        ``(x_padded, (H, W))``: the padded tensor and the original size for :func:`crop`.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % block, (-w) % block
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Undo :func:`pad_to_block`: keep the top-left ``size = (H, W)`` pixels."""
    return x[..., : size[0], : size[1]]


class BlockCS(LinearOperator):
    """Block compressive-sensing operator ``y_i = Phi x_i`` on ``B x B`` blocks.

    Args:
        ratio: sampling ratio in ``(0, 1]`` (see :func:`num_measurements` for ``M``).
        block: block size ``B`` (33 in ReconNet / ISTA-Net+).
        channels: image channels ``C``.
        matrix: ``"gaussian"``: i.i.d. ``N(0, 1/M)`` entries (ReconNet / ISTA-Net+ style random
            matrix, columns of unit expected norm); ``"orthogonal"``: the same Gaussian draw
            with its rows orthonormalised by a QR decomposition (``Phi Phi^T = I``), which gives
            the closed-form :meth:`data_step`.
        learnable: store ``Phi`` as an ``nn.Parameter`` trained with the network (otherwise a
            buffer). Either way it is in ``state_dict()`` under ``"phi"``, so saved weights
            carry the matrix they were trained with.
        seed: seed of the CPU generator that draws ``Phi`` (deterministic across devices).
        channel_mode: ``"joint"`` (default): one ``M x (C B^2)`` matrix measures all channels of
            a block together, conv kernel ``(M, C, B, B)``, ``M = num_measurements(ratio,
            C B^2)``. ``"separate"``: every channel is sensed on its own with the same
            ``M x B^2`` matrix (grouped convolution), ``y`` has ``C * M`` channels ordered
            channel-major. Both give the ratio ``M / N`` per block.

    Attributes:
        phi: ``(M, N)`` sensing matrix, ``N = C B^2`` (joint) or ``B^2`` (separate).
        m: measurements per block (per channel in separate mode).
    """

    def __init__(
        self,
        ratio: float,
        block: int = 33,
        channels: int = 1,
        matrix: Literal["gaussian", "orthogonal"] = "orthogonal",
        learnable: bool = False,
        seed: int = 0,
        channel_mode: Literal["joint", "separate"] = "joint",
        *,
        phi: Tensor | None = None,
    ):
        super().__init__()
        if matrix not in ("gaussian", "orthogonal"):
            raise ValueError(f"matrix must be 'gaussian' or 'orthogonal', got {matrix!r}")
        if channel_mode not in ("joint", "separate"):
            raise ValueError(f"channel_mode must be 'joint' or 'separate', got {channel_mode!r}")
        self.ratio = float(ratio)
        self.block = int(block)
        self.channels = int(channels)
        self.matrix = matrix
        self.learnable = bool(learnable)
        self.channel_mode = channel_mode
        n = self.block * self.block * (self.channels if channel_mode == "joint" else 1)
        if phi is None:
            m = num_measurements(self.ratio, n)
            phi = self._draw(m, n, matrix, seed)
        else:
            phi = torch.as_tensor(phi, dtype=torch.float32)
            if phi.ndim != 2 or phi.shape[1] != n:
                raise ValueError(
                    f"phi must be (M, {n}) for block {block} / {channels} channel(s), got {tuple(phi.shape)}"
                )
        self.m = int(phi.shape[0])
        if self.learnable:
            self.phi = torch.nn.Parameter(phi.clone())
        else:
            self.register_buffer("phi", phi.clone())

    @classmethod
    def from_matrix(
        cls,
        phi: Tensor,
        block: int = 33,
        channels: int = 1,
        learnable: bool = False,
        channel_mode: Literal["joint", "separate"] = "joint",
        orthonormal_rows: bool | None = None,
    ) -> "BlockCS":
        """Wrap an existing ``(M, N)`` matrix (e.g. ISTA-Net+'s ``phi_0_25_1089.mat``, ``Phi``).

        ``orthonormal_rows`` (checked numerically when ``None``) selects the fast data step.
        """
        phi = torch.as_tensor(phi, dtype=torch.float32)
        if orthonormal_rows is None:
            p64 = phi.double()
            eye = torch.eye(phi.shape[0], dtype=torch.float64)
            orthonormal_rows = bool(torch.allclose(p64 @ p64.T, eye, atol=1e-5))
        n = phi.shape[1]
        return cls(
            ratio=phi.shape[0] / n,
            block=block,
            channels=channels,
            matrix="orthogonal" if orthonormal_rows else "gaussian",
            learnable=learnable,
            channel_mode=channel_mode,
            phi=phi,
        )

    @staticmethod
    def _draw(m: int, n: int, matrix: str, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(int(seed))
        if matrix == "gaussian":
            return (torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(m)).float()
        # QR of an (N, M) Gaussian: Q has orthonormal columns, Phi = Q^T has orthonormal rows.
        # Fixing the signs with diag(R) makes Q a deterministic function of the draw (and
        # Haar-distributed, Mezzadri 2007).
        q, r = torch.linalg.qr(torch.randn(n, m, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))[None, :]
        return q.T.contiguous().float()

    # ------------------------------------------------------------------ operator

    @property
    def n(self) -> int:
        """Block length ``N`` of the matrix (``C B^2`` joint, ``B^2`` separate)."""
        return int(self.phi.shape[1])

    def _kernel(self, ref: Tensor) -> tuple[Tensor, int]:
        b, c = self.block, self.channels
        phi = self.phi.to(device=ref.device, dtype=ref.dtype)
        if self.channel_mode == "joint":
            return phi.reshape(self.m, c, b, b), 1
        # grouped conv: the same (M, 1, B, B) kernel for each of the C groups
        return phi.reshape(self.m, 1, b, b).repeat(c, 1, 1, 1), c

    def _check_x(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"BlockCS expects (batch, {self.channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % self.block or x.shape[-1] % self.block:
            raise ValueError(
                f"BlockCS needs H and W multiples of {self.block}, got {tuple(x.shape[-2:])}; use pad_to_block()"
            )

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        """Measure every block. ``(batch, C, H, W) -> (batch, M', H/B, W/B)``, ``M' = M`` or ``C M``."""
        self._check_x(x)
        w, groups = self._kernel(x)
        return F.conv2d(x, w, stride=self.block, groups=groups)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        """``Phi^T y_i`` placed back at every block. ``(batch, M', h, w) -> (batch, C, hB, wB)``."""
        w, groups = self._kernel(y)
        # stride == kernel size: the transposed convolution writes disjoint blocks, exactly the
        # adjoint of the non-overlapping strided convolution.
        return F.conv_transpose2d(y, w, stride=self.block, groups=groups)

    def measurement_shape(self, input_shape) -> tuple[int, ...]:
        bsz, _, h, w = input_shape
        mm = self.m * (self.channels if self.channel_mode == "separate" else 1)
        return (bsz, mm, h // self.block, w // self.block)

    def input_shape(self, measurement_shape) -> tuple[int, ...]:
        bsz, _, h, w = measurement_shape
        return (bsz, self.channels, h * self.block, w * self.block)

    def initial_estimate(self, y: Tensor, q: Tensor | None = None) -> Tensor:
        """Initial image from the measurements.

        Args:
            y: ``(batch, M', h, w)`` measurements.
            q: optional ``(N, M)`` linear initialisation matrix (ISTA-Net+'s ``Q_init``, see
                :meth:`ls_init_matrix`); ``None`` gives the back-projection ``A^T y`` (which is
                the minimum-norm least-squares solution when the rows are orthonormal).

        Returns:
            ``(batch, C, hB, wB)``.
        """
        if q is None:
            return self.A_adjoint(y)
        b, c = self.block, self.channels
        q = q.to(device=y.device, dtype=y.dtype)
        if self.channel_mode == "joint":
            w, groups = q.T.reshape(self.m, c, b, b), 1
        else:
            w, groups = q.T.reshape(self.m, 1, b, b).repeat(c, 1, 1, 1), c
        return F.conv_transpose2d(y, w, stride=b, groups=groups)

    @torch.no_grad()
    def ls_init_matrix(self, train_blocks: Tensor) -> Tensor:
        """ISTA-Net+'s least-squares initialisation ``Q_init = X Y^T (Y Y^T)^{-1}``.

        ``X`` holds training blocks as columns and ``Y = Phi X`` their measurements, so that
        ``Q_init y`` is the linear map minimising ``||Q Y - X||_F`` (Zhang & Ghanem 2018, Sec. 3).

        Args:
            train_blocks: ``(n_blocks, N)`` vectorised blocks, or ``(n_blocks, C, B, B)``
                (``(n_blocks, 1, B, B)`` / ``(n_blocks, B, B)`` in separate mode).

        Returns:
            ``(N, M)`` float32 matrix for :meth:`initial_estimate`.
        """
        x = train_blocks.reshape(train_blocks.shape[0], -1).to(torch.float64).T  # (N, n)
        if x.shape[0] != self.n:
            raise ValueError(f"training blocks have length {x.shape[0]}, expected {self.n}")
        phi = self.phi.detach().to(device=x.device, dtype=torch.float64)
        y = phi @ x  # (M, n)
        # Q = X Y^T (Y Y^T)^{-1}  <=>  (Y Y^T) Q^T = Y X^T ; symmetric solve
        qt = torch.linalg.solve(y @ y.T, y @ x.T)
        return qt.T.contiguous().float()

    # ------------------------------------------------------------------ data step

    def has_orthonormal_rows(self) -> bool:
        """Whether the fast data step applies: an orthogonal matrix that is not being trained.

        A learnable matrix drifts away from orthonormality during training, so it always takes
        the general path.
        """
        return self.matrix == "orthogonal" and not self.learnable

    def data_step(self, x: Tensor, y: Tensor, rho: float | Tensor) -> Tensor:
        """Exact prox ``argmin_z ||A z - y||^2 / 2 + ||z - x||^2 / (2 rho)``.

        By the push-through identity ``(A^T A + I/rho)^{-1} A^T = A^T (A A^T + I/rho)^{-1}``,
        the solution of ``(A^T A + I/rho) z = A^T y + x/rho`` is

            ``z = x - A^T (A A^T + I/rho)^{-1} (A x - y)``.

        ``A A^T`` is block diagonal with the same ``M x M`` block ``Phi Phi^T`` for every image
        block. With orthonormal rows (``Phi Phi^T = I``) this is
        ``z = x - rho / (1 + rho) * A^T (A x - y)`` -- a gradient step of size ``rho/(1+rho)``.
        Otherwise one ``M x M`` linear system (per distinct ``rho``) is solved; differentiable
        in ``x``, ``y``, ``rho`` and ``Phi``.

        Args:
            x: ``(batch, C, H, W)``; y: ``(batch, M', H/B, W/B)``; rho: ``> 0``, scalar or
                per sample.
        """
        r = batch_param(rho, x)
        resid = self.A(x) - y
        if self.has_orthonormal_rows():
            return x - (r / (1.0 + r)) * self.A_adjoint(resid)
        phi = self.phi.to(device=x.device, dtype=x.dtype)
        gram = phi @ phi.T  # (M, M)
        eye = torch.eye(self.m, device=x.device, dtype=x.dtype)
        bsz, mm, h, w = resid.shape
        # measurement vectors as rows: (batch, blocks * groups, M)
        groups = mm // self.m
        v = resid.reshape(bsz, groups, self.m, h * w).permute(0, 1, 3, 2).reshape(bsz, -1, self.m)
        if isinstance(r, Tensor) and r.ndim > 0:
            mats = gram[None] + (1.0 / r.reshape(-1))[:, None, None] * eye[None]  # (batch, M, M)
            sol = torch.linalg.solve(mats, v.transpose(1, 2)).transpose(1, 2)
        else:
            sol = torch.linalg.solve(gram + (1.0 / r) * eye, v.transpose(1, 2)).transpose(1, 2)
        sol = sol.reshape(bsz, groups, h * w, self.m).permute(0, 1, 3, 2).reshape(bsz, mm, h, w)
        return x - self.A_adjoint(sol)

    def extra_repr(self) -> str:
        return (
            f"ratio={self.ratio}, block={self.block}, channels={self.channels}, M={self.m}, "
            f"matrix={self.matrix!r}, learnable={self.learnable}, channel_mode={self.channel_mode!r}"
        )
