"""TUR's task-grouped uncertainty loss (METHODS.md §4.1) and the plain L1 baseline.

For each task ``k`` present in the batch, with ``U_i`` the head's per-pixel map of sample ``i``
(same shape as the image):

    Ū_k = mean_{i in k} U_i + eps                    (one C x H x W map per task)
    L_k = mean_{i in k, c, h, w} |ŷ_i - y_i| / Ū_k  +  2 log( mean_{c, h, w} Ū_k )
    L   = (1 / K_present) Σ_k L_k

``eps = 1e-6`` is added once, to the averaged map, and so enters both the division and the
log (the AirNet variant of the reference code, ``airnet_uncertainty_loss``: ``Ū_k + 1e-6``;
the 7-task variant has none, METHODS.md §4.5 asks for it). The uncertainty is averaged over
the task's samples *before* dividing, as the reference code does (§4.6). Lists are per task
(the 7-task semantics; the AirNet code's accumulating lists are a bug, §4.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

EPS = 1e-6


def uncertainty_loss(pred: Tensor, target: Tensor, uncertainty: Tensor, tasks: Sequence[str] | None, eps: float = EPS) -> Tensor:
    """TUR loss of one batch.

    Args:
        pred: restored images ``(B, C, H, W)``.
        target: ground truth, same shape.
        uncertainty: the head's output, same shape, > 0.
        tasks: one task label per sample; ``None`` treats the batch as one task.
        eps: added to the task-averaged uncertainty map.

    Returns:
        A scalar: the mean over the tasks present of the per-task loss.
    """
    if pred.shape != target.shape or uncertainty.shape != pred.shape:
        raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and uncertainty {tuple(uncertainty.shape)} must match")
    labels = list(tasks) if tasks is not None else ["all"] * pred.shape[0]
    if len(labels) != pred.shape[0]:
        raise ValueError(f"{len(labels)} task labels for a batch of {pred.shape[0]}")
    error = (pred - target).abs()
    losses = []
    for task in dict.fromkeys(labels):  # first-appearance order; the mean does not depend on it
        index = torch.tensor([i for i, t in enumerate(labels) if t == task], device=pred.device)
        u = uncertainty.index_select(0, index).mean(0) + eps
        losses.append((error.index_select(0, index) / u).mean() + 2.0 * torch.log(u.mean()))
    return torch.stack(losses).mean()


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """The plain baseline: mean absolute error."""
    return (pred - target).abs().mean()
