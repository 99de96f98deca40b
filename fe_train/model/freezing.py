"""Deciding, by module name, what trains: the one place parameters are frozen or not."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fe_train.errors import UserError


@dataclass(frozen=True)
class ParamCounts:
    trainable: int
    total: int

    def describe(self) -> str:
        return f"trainable {self.trainable:,} of {self.total:,} parameters ({100.0 * self.trainable / max(self.total, 1):.3f}%)"


def numel(param: nn.Parameter) -> int:
    """Full size of a parameter, also when ZeRO-3 has partitioned it away (``ds_numel``)."""
    return getattr(param, "ds_numel", param.numel())


def set_trainable(model: nn.Module, names: tuple[str, ...]) -> ParamCounts:
    """Train the top-level submodules in ``names``; freeze every other parameter."""
    children = dict(model.named_children())
    missing = [name for name in names if children.get(name) is None]
    if missing:
        raise UserError(f"cannot train {missing}: the model has {sorted(k for k, v in children.items() if v is not None)}")
    model.requires_grad_(False)
    for name in names:
        children[name].requires_grad_(True)
    return count_params(model)


def count_params(model: nn.Module) -> ParamCounts:
    params = list(model.parameters())
    return ParamCounts(sum(numel(p) for p in params if p.requires_grad), sum(numel(p) for p in params))


def trainable_params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
