"""Combining a model's loss terms (summed over a micro-batch) into the loss that backward reads.

Each term (e.g. the reply tokens' cross-entropy, the SER head's) comes as the sum over its items and their count.
Without ``norm`` the loss is each term's mean over this micro-batch, weighted: what evaluation and the fixtures
read. The training loop instead passes ``norm``: each term's count over the whole accumulation window of every
rank divided by the data-parallel world size, so that after DeepSpeed averages the ranks' gradients the optimizer
sees the gradient of each term's mean over the global batch, however the batch was cut (issue 18).
"""

from __future__ import annotations

import torch

from fe_train.data.prompt import IGNORE


def weighted_loss(sums: list[torch.Tensor], counts: list[torch.Tensor], weights: tuple[float, ...],
                  norm: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``loss`` = sum_i weights[i] x sums[i] / norm[i] (norm defaults to the counts, at least 1);
    ``loss_sums`` and ``loss_counts`` (n_terms,) are detached, for the meter."""
    summed = torch.stack(sums)  # (n_terms,)
    counted = torch.stack([c.to(summed) for c in counts])  # (n_terms,)
    divisor = counted.clamp(min=1) if norm is None else norm.to(summed)
    loss = (torch.tensor(weights, dtype=summed.dtype, device=summed.device) * summed / divisor).sum()
    return {"loss": loss, "loss_sums": summed.detach(), "loss_counts": counted.detach()}


def labelled_targets(labels: torch.Tensor) -> float:
    """How many next-token targets of ``labels`` (B, S) carry a label: the count of a next-token loss term."""
    return float((labels[:, 1:] != IGNORE).sum())
