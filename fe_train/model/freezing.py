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


OUTSIDE = "_frozen_outside"
"""Instance attribute of an ``Assembly``: its frozen parts taken out of its module tree, by name."""


class Assembly(nn.Module):
    """A model of trained and frozen parts, which an engine wraps.

    ``keep_frozen_outside`` can take its frozen parts out of its module tree, so that a DeepSpeed engine
    never sees them (no ZeRO-3 hooks, no casts, no state): they stay reachable as attributes and keep
    following ``train()`` / ``eval()``.
    """

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.__dict__.get(OUTSIDE, {}).values():
            module.train(mode)
        return self


def keep_frozen_outside(model: nn.Module) -> dict[str, nn.Module]:
    """Take every child of ``model`` without a trainable parameter out of its module tree (recursing into nested
    ``Assembly`` children); returns the parts taken out by dotted name. Gradients still flow through them.

    For a plan that keeps the frozen models whole on every rank (``zero3_replicated.json``): inside a ZeRO-3
    engine every submodule call of a 7B LLM and its encoder runs DeepSpeed's Python hooks, which on a GPU cost
    more than the model's own compute (docs/benchmarks.md, issue 20).
    """
    moved: dict[str, nn.Module] = {}
    for name, child in list(model.named_children()):
        params = list(child.parameters())
        if params and not any(p.requires_grad for p in params):
            del model._modules[name]
            model.__dict__[name] = child  # still ``model.<name>``, no longer a submodule
            model.__dict__.setdefault(OUTSIDE, {})[name] = child
            moved[name] = child
        elif isinstance(child, Assembly):
            moved.update({f"{name}.{inner}": module for inner, module in keep_frozen_outside(child).items()})
    return moved


def outside_parts(model: nn.Module) -> dict[str, nn.Module]:
    """The parts ``keep_frozen_outside`` took out of ``model`` and of its nested ``Assembly`` children, by dotted name."""
    parts = dict(model.__dict__.get(OUTSIDE, {}))
    for name, module in [*model.named_children(), *parts.items()]:
        if isinstance(module, Assembly):
            parts.update({f"{name}.{inner}": part for inner, part in outside_parts(module).items()})
    return parts
