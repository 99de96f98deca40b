"""Every config key with its default and its docstring (``fe-train config --defaults``), read from the source of the
section dataclasses: a field's docstring is the string literal written under it."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap

import yaml


def field_docs(cls) -> dict[str, str]:
    """Field name -> the docstring written under it in ``cls``'s source (one line, whitespace collapsed)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for field, after in zip(body, body[1:]):
        if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[field.target.id] = " ".join(after.value.value.split())
    return docs


def reference(config) -> str:
    """YAML of ``config`` (a ``Config``) with each key's docstring as a comment above it."""
    lines = []
    for section in dataclasses.fields(config):
        value = getattr(config, section.name)
        docs = field_docs(type(value))
        lines.append(f"{section.name}:")
        for field in dataclasses.fields(value):
            if field.name in docs:
                lines.append(f"  # {docs[field.name]}")
            dumped = yaml.safe_dump({field.name: getattr(value, field.name)}, default_flow_style=True, width=10**6).strip()
            lines.append(f"  {dumped[1:-1]}")
    return "\n".join(lines) + "\n"
