"""Modules loaded on first use, so that each Lambda function loads only what its handlers call.

`app.py` is imported by every one of the app's functions (the API, the stream consumers, the
queue workers, the schedules); importing every service there made each cold start pay for all
of them (PynamoDB models, jsonschema, the Powertools batch utility, ...). A `LazyModule` stands
for a module and imports it on the first attribute read; every read after that goes to the
real module (so `monkeypatch.setattr("chalicelib.services.x.f", ...)` is seen), and so do
writes. Measured by `bench/coldstart.py`.

Unlike `importlib.util.LazyLoader`, nothing lazy is put in `sys.modules` (every other importer
gets the real module) and the first load is safe when threads race for it (the local runtime
serves requests on concurrent threads): `importlib.import_module` holds the module's import lock.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module `name`, imported on the first attribute read."""

    __slots__ = ("_lazy_module", "_lazy_name")

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_lazy_name", name)
        object.__setattr__(self, "_lazy_module", None)

    def _load(self) -> ModuleType:
        module: ModuleType | None = object.__getattribute__(self, "_lazy_module")
        if module is None:
            module = importlib.import_module(object.__getattribute__(self, "_lazy_name"))
            object.__setattr__(self, "_lazy_module", module)
        return module

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._load(), attribute)

    def __setattr__(self, attribute: str, value: Any) -> None:
        setattr(self._load(), attribute, value)

    def __delattr__(self, attribute: str) -> None:
        delattr(self._load(), attribute)

    def __repr__(self) -> str:
        name = object.__getattribute__(self, "_lazy_name")
        loaded = object.__getattribute__(self, "_lazy_module") is not None
        return f"<lazy module {name!r}{'' if loaded else ' (not loaded yet)'}>"


def module(name: str) -> Any:
    """A stand-in for `import name`, loaded on first use (typed Any: declare the real import
    under `TYPE_CHECKING` for mypy)."""
    return LazyModule(name)


def modules(package: str, *names: str) -> tuple[Any, ...]:
    """`module(f"{package}.{name}")` for each name, in order."""
    return tuple(LazyModule(f"{package}.{name}") for name in names)


class LazyAttribute:
    """Stands for `module.name` (a function or a class), imported on the first call or attribute read."""

    __slots__ = ("_lazy_module", "_lazy_name")

    def __init__(self, module_name: str, name: str) -> None:
        self._lazy_module = LazyModule(module_name)
        self._lazy_name = name

    def _load(self) -> Any:
        return getattr(self._lazy_module, self._lazy_name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._load()(*args, **kwargs)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._load(), attribute)


def attribute(module_name: str, name: str) -> Any:
    """A stand-in for `from module_name import name`, loaded on first use."""
    return LazyAttribute(module_name, name)
