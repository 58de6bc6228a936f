"""The config keys with their types, defaults and docs, read from the schema's dataclasses.

Each field of `windtunnel.schema` has its docstring on the lines under it; Python keeps no such
attribute docstrings at run time, so they are read from the module's source (with `ast`, never
executed). `windtunnel config keys [SECTION]` prints them.

    >>> [k.key for k in config_keys("model")][:2]
    ['model.d_model', 'model.n_layers']
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from dataclasses import dataclass

from . import schema
from .errors import WindtunnelError
from .typecheck import suggest

__all__ = ["KeyDoc", "config_keys", "format_keys"]


@dataclass(frozen=True)
class KeyDoc:
    """One config key: `section.field`, its type as written in the schema, its default and its doc."""

    key: str
    type: str
    default: str
    doc: str


def config_keys(section: str | None = None) -> list[KeyDoc]:
    """Every key of the run config (or of one `section`: model, train, data), in schema order.

    Example:
        >>> next(k for k in config_keys("train") if k.key == "train.lr").default
        '0.01'
    """
    sections = schema.SECTIONS
    if section is not None and section not in sections:
        raise WindtunnelError(f"config keys: unknown section {section!r}{suggest(section, sections)}; "
                              f"expected one of {', '.join(sections)}")
    docs = _field_docs()
    out = []
    for name, cls in sections.items():
        if section not in (None, name):
            continue
        for f in dataclasses.fields(cls):
            out.append(KeyDoc(key=f"{name}.{f.name}", type=str(f.type), default=_default(f),
                              doc=docs.get((cls.__name__, f.name), "")))
    return out


def format_keys(keys: list[KeyDoc], *, width: int = 100) -> str:
    """`section.key  type = default` then the doc, indented and wrapped to `width` columns.

    Example:
        >>> print(format_keys(config_keys("model")[:1]))
        model.d_model  int = 256
            Width: the residual stream size. The width multiplier is m = d_model / dim_model_base.
    """
    blocks = []
    for k in keys:
        doc = textwrap.fill(" ".join(k.doc.split()), width=width, initial_indent="    ", subsequent_indent="    ")
        blocks.append(f"{k.key}  {k.type} = {k.default}" + (f"\n{doc}" if doc else ""))
    return "\n".join(blocks)


def _field_docs() -> dict[tuple[str, str], str]:
    """{(class, field): the string literal right under the field} from the schema module's source."""
    tree = ast.parse(inspect.getsource(schema))
    docs = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for field, after in zip(node.body, node.body[1:]):
            if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[(node.name, field.target.id)] = inspect.cleandoc(after.value.value)
    return docs


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return str(list(value))
    return str(value)
