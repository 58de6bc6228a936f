"""Lazy public names for a package (PEP 562): a name's module is imported on first access, so
`import windtunnel` and `windtunnel --help` stay fast and torch or Ray load only when needed.

    >>> __getattr__, __dir__ = lazy_exports(__name__, {"train": "training.loop"}, globals())  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`: `exports` maps each public name to the module
    (relative to `package`) that defines it; a resolved name is cached in `namespace`.

    Example:
        >>> getattr_, dir_ = lazy_exports("windtunnel", {"load_config": "config"}, {})
        >>> getattr_("load_config").__name__
        'load_config'
    """
    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(namespace.get("__all__", exports))

    return __getattr__, __dir__
