"""Linear image-formation operators ``y = A x`` for model-based and deep-unfolding restoration.

Every operator is a :class:`torch.nn.Module` so that it moves with ``.to(device)``, can hold
learnable parameters (e.g. a trained compressive-sensing matrix) and is differentiable end to
end. Unfolding networks such as LoRun alternate, at stage ``k``,

* a gradient step on the data term ``z = x - rho_k * A^T (A x - y)``
  (:meth:`LinearOperator.gradient_step`), or its exact proximal version
  ``argmin_z ||A z - y||^2 / 2 + ||z - x||^2 / (2 rho_k)`` (:meth:`LinearOperator.data_step`),
* with a learned proximal denoiser,

so each operator provides ``A``, its adjoint ``A^T`` and, where the structure allows it, a
closed-form data step.

Conventions:

* tensors are batched: ``x`` is ``(B, ...)`` and ``y = A(x)`` is ``(B, ...)``; every method
  works on any device and in any floating dtype (operator constants are cast to the input's
  dtype/device on the fly, so a float32 operator also runs float64 adjointness checks);
* ``rho`` may be a Python float, a 0-d tensor, a ``(B,)`` tensor or a ``(B, 1, ..., 1)`` tensor
  (one step size per sample); see :func:`batch_param`.

Concrete operators live in :mod:`irc.operators.cs` (block compressive sensing),
:mod:`irc.operators.cassi` (spectral snapshot imaging) and :mod:`irc.operators.blur_sr`
(blur + downsampling); :class:`SeparableMatrixOperator` here wraps separable matrices such as
the MATLAB-bicubic resize of :func:`irc.operators.resize.imresize_matrix`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "LinearOperator",
    "SeparableMatrixOperator",
    "adjointness_error",
    "batch_param",
    "conjugate_gradient",
]


def batch_param(value: float | Tensor, ref: Tensor) -> Tensor | float:
    """Make a scalar or per-sample parameter broadcastable against ``ref``.

    Args:
        value: a Python number, a 0-d / 1-element tensor, a ``(B,)`` tensor or an already
            broadcastable ``(B, 1, ..., 1)`` tensor.
        ref: the tensor it multiplies, ``(B, ...)``.

    Returns:
        ``value`` unchanged for Python numbers; otherwise a tensor on ``ref``'s device and dtype
        with shape ``()`` or ``(B, 1, ..., 1)`` (``ref.ndim`` dimensions).
    """
    if not isinstance(value, Tensor):
        return value
    v = value.to(device=ref.device, dtype=ref.dtype)
    if v.ndim == 0 or v.numel() == 1:
        return v.reshape(())
    if v.ndim == 1:
        # a (B,) vector: one value per sample
        return v.reshape((-1,) + (1,) * (ref.ndim - 1))
    if v.ndim < ref.ndim:
        # e.g. (B, 1, 1, 1) given for a 5-D reference: pad with trailing singleton dims
        return v.reshape(v.shape + (1,) * (ref.ndim - v.ndim))
    return v


def _bdot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product ``<a_b, b_b>`` of two ``(B, ...)`` tensors, shape ``(B,)``."""
    return (a * b).flatten(1).sum(1)


class LinearOperator(torch.nn.Module):
    """``y = A x``. Subclasses implement :meth:`A` and :meth:`A_adjoint`.

    Batched ``(B, ...)`` tensors, any device/dtype, differentiable with respect to the input
    and to the operator's own parameters.
    """

    # ---------------------------------------------------------------- the operator itself

    def A(self, x: Tensor) -> Tensor:  # noqa: N802 (mathematical name)
        """Apply the forward operator. Args: x ``(B, ...)`` signal. Returns: ``y = A x``."""
        raise NotImplementedError

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        """Apply the adjoint ``A^T``. Args: y ``(B, ...)`` measurement. Returns: ``A^T y``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.A(x)

    def normal(self, x: Tensor) -> Tensor:
        """``A^T A x`` (the Gram / normal operator)."""
        return self.A_adjoint(self.A(x))

    def initial_estimate(self, y: Tensor) -> Tensor:
        """A cheap back-projection used to start iterations; the default is ``A^T y``."""
        return self.A_adjoint(y)

    # ---------------------------------------------------------------- steps on the data term

    def gradient_step(self, x: Tensor, y: Tensor, rho: float | Tensor) -> Tensor:
        """One gradient step on ``||A x - y||^2 / 2``: ``x - rho * A^T (A x - y)``.

        Args:
            x: current estimate ``(B, ...)``.
            y: measurement ``(B, ...)``, same shape as ``A(x)``.
            rho: step size, a float, 0-d tensor, ``(B,)`` or ``(B, 1, 1, 1)`` tensor.

        Returns:
            The updated estimate, shape of ``x``.
        """
        return x - batch_param(rho, x) * self.A_adjoint(self.A(x) - y)

    def data_step(self, x: Tensor, y: Tensor, rho: float | Tensor) -> Tensor:
        """Proximal step ``argmin_z ||A z - y||^2 / 2 + ||z - x||^2 / (2 rho)``.

        Equivalently the solution of the normal equations ``(A^T A + I / rho) z = A^T y + x / rho``.
        Subclasses with structure (orthonormal rows, diagonal ``A A^T``, FFT-diagonalisable
        ``A^T A``) override this with a closed form; the base class raises
        ``NotImplementedError`` (use :meth:`data_step_cg` for an iterative solution).
        """
        raise NotImplementedError(f"{type(self).__name__} has no closed-form data step")

    def data_step_cg(
        self,
        x: Tensor,
        y: Tensor,
        rho: float | Tensor,
        *,
        max_iter: int = 100,
        tol: float = 1e-10,
    ) -> Tensor:
        """The proximal step of :meth:`data_step` by conjugate gradient on the normal equations.

        Works for every operator; a reference solution for testing closed forms and a fallback
        for operators without one. Differentiable (by unrolling), but slow to backpropagate.
        """
        r = batch_param(rho, x)
        inv = 1.0 / r

        def apply(v: Tensor) -> Tensor:
            return self.normal(v) + inv * v

        return conjugate_gradient(apply, self.A_adjoint(y) + inv * x, x0=x, max_iter=max_iter, tol=tol)

    # ---------------------------------------------------------------- shapes and helpers

    def measurement_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of ``A(x)`` for an input of shape ``input_shape`` (batch dim included).

        The default runs :meth:`A` once on zeros of that shape (on the ``meta`` device when the
        operator supports it); subclasses override with the formula.
        """
        with torch.no_grad():
            try:
                return tuple(self.A(torch.zeros(tuple(input_shape), device="meta")).shape)
            except Exception:  # some ops (FFT, indexing) lack meta kernels: use a real tensor
                dev = self._device()
                return tuple(self.A(torch.zeros(tuple(input_shape), device=dev)).shape)

    def input_shape(self, measurement_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of ``A^T(y)`` for a measurement of shape ``measurement_shape``."""
        with torch.no_grad():
            dev = self._device()
            return tuple(self.A_adjoint(torch.zeros(tuple(measurement_shape), device=dev)).shape)

    def _device(self) -> torch.device:
        """The device of the operator's first parameter or buffer (CPU when it has none)."""
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")


def conjugate_gradient(
    apply: Callable[[Tensor], Tensor],
    b: Tensor,
    *,
    x0: Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> Tensor:
    """Batched conjugate gradient for ``M x = b`` with ``M`` symmetric positive definite.

    Args:
        apply: ``v -> M v`` on ``(B, ...)`` tensors (sample ``b`` only mixes with sample ``b``).
        b: right-hand side ``(B, ...)``.
        x0: starting point (zeros when ``None``).
        max_iter: iteration cap.
        tol: stop when every sample's residual norm is below ``tol * ||b||``.

    Returns:
        The approximate solution, shape of ``b``.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x)
    p = r.clone()
    rs = _bdot(r, r)
    bnorm2 = _bdot(b, b).clamp_min(torch.finfo(b.dtype).tiny)
    shape = (-1,) + (1,) * (b.ndim - 1)
    for _ in range(max_iter):
        if bool((rs <= (tol * tol) * bnorm2).all()):
            break
        mp = apply(p)
        denom = _bdot(p, mp)
        # samples that already converged have p == 0: keep their step at zero instead of 0/0
        alpha = torch.where(denom > 0, rs / torch.where(denom > 0, denom, torch.ones_like(denom)), 0.0)
        x = x + alpha.reshape(shape) * p
        r = r - alpha.reshape(shape) * mp
        rs_new = _bdot(r, r)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), 0.0)
        p = r + beta.reshape(shape) * p
        rs = rs_new
    return x


def adjointness_error(
    op: LinearOperator,
    x_shape: Sequence[int],
    y_shape: Sequence[int] | None = None,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> float:
    """Relative dot-product test ``|<A x, y> - <x, A^T y>| / (|<A x, y>| + eps)``.

    ``x`` and ``y`` are standard-normal random tensors (drawn on the CPU with ``generator`` so
    the check is reproducible, then moved to the operator's device). A correct adjoint gives
    ~1e-15 in float64.

    Args:
        op: the operator.
        x_shape: input shape, batch dim included.
        y_shape: measurement shape; inferred from ``op.A(x)`` when ``None``.
        generator: CPU random generator (a fixed-seed one is used when ``None``).
        dtype: computation dtype (float64 recommended).

    Returns:
        The relative error as a Python float.
    """
    g = generator if generator is not None else torch.Generator().manual_seed(1234)
    dev = op._device() if isinstance(op, LinearOperator) else torch.device("cpu")
    x = torch.randn(tuple(x_shape), generator=g, dtype=dtype).to(dev)
    with torch.no_grad():
        ax = op.A(x)
        if y_shape is None:
            y_shape = tuple(ax.shape)
        y = torch.randn(tuple(y_shape), generator=g, dtype=dtype).to(dev)
        aty = op.A_adjoint(y)
        lhs = (ax.to(dtype) * y).sum()
        rhs = (x * aty.to(dtype)).sum()
    eps = torch.finfo(dtype).tiny
    return float((lhs - rhs).abs() / (lhs.abs() + eps))


class SeparableMatrixOperator(LinearOperator):
    """``A x = M_h x M_w^T`` on the last two dims: a separable linear map of an image.

    Covers, e.g., the MATLAB-bicubic resize (one 1-D matrix per axis, see
    :meth:`from_imresize`) used as the degradation of the bicubic SR benchmarks.

    Args:
        mat_h: ``(H_out, H_in)`` matrix applied along the height.
        mat_w: ``(W_out, W_in)`` matrix applied along the width.

    Shapes: ``x`` ``(..., H_in, W_in)`` -> ``y`` ``(..., H_out, W_out)``.
    """

    def __init__(self, mat_h: Tensor, mat_w: Tensor):
        super().__init__()
        # not persistent: the matrices are derived from sizes, not learned weights
        self.register_buffer("mat_h", torch.as_tensor(mat_h), persistent=False)
        self.register_buffer("mat_w", torch.as_tensor(mat_w), persistent=False)

    @classmethod
    def from_imresize(
        cls,
        in_hw: tuple[int, int],
        scale: float | None = None,
        out_hw: tuple[int, int] | None = None,
        antialias: bool = True,
    ) -> "SeparableMatrixOperator":
        """The (un-rounded) MATLAB ``imresize`` bicubic resize as an operator.

        Args:
            in_hw: input ``(H, W)``.
            scale: MATLAB scale factor (``out = ceil(scale * in)``), e.g. ``1/4`` for x4 SR.
            out_hw: explicit output size instead of (or together with) ``scale``.
            antialias: MATLAB's ``'Antialiasing'`` option (default on, as in MATLAB).
        """
        from irc.operators.resize import imresize_matrix

        oh, ow = (None, None) if out_hw is None else out_hw
        mh = imresize_matrix(in_hw[0], oh, scale, antialias)
        mw = imresize_matrix(in_hw[1], ow, scale, antialias)
        return cls(mh, mw)

    def _mats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.mat_h.to(x), self.mat_w.to(x)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        mh, mw = self._mats(x)
        return mh @ x @ mw.transpose(0, 1)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        mh, mw = self._mats(y)
        return mh.transpose(0, 1) @ y @ mw

    def measurement_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(input_shape[:-2]) + (self.mat_h.shape[0], self.mat_w.shape[0])

    def input_shape(self, measurement_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(measurement_shape[:-2]) + (self.mat_h.shape[1], self.mat_w.shape[1])

    def data_step(self, x: Tensor, y: Tensor, rho: float | Tensor) -> Tensor:
        """Exact prox via the eigendecompositions of ``M_h^T M_h`` and ``M_w^T M_w``.

        ``A^T A = (M_h^T M_h) kron (M_w^T M_w)``; with ``M^T M = U diag(s) U^T`` per axis,
        ``(A^T A + I/rho)^{-1} = (U_h kron U_w) diag(1 / (s_h,i s_w,j + 1/rho)) (U_h kron U_w)^T``.
        """
        mh, mw = self._mats(x)
        sh, uh = torch.linalg.eigh(mh.transpose(0, 1) @ mh)
        sw, uw = torch.linalg.eigh(mw.transpose(0, 1) @ mw)
        r = batch_param(rho, x)
        rhs = self.A_adjoint(y) + x / r
        t = uh.transpose(0, 1) @ rhs @ uw
        t = t / (sh[:, None] * sw[None, :] + 1.0 / r)
        return uh @ t @ uw.transpose(0, 1)
