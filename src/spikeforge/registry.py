"""Registries: the extension points of spikeforge (timm's ``register_model`` style).

Each kind of pluggable item (neuron models, surrogates, encoders, datasets, architectures, stage kinds) has one
:class:`Registry`. An item registers itself in its own file::

    NEURONS = Registry("neuron model")          # in the package that owns the kind

    @NEURONS.register("alif")                   # in the item's own file
    class ALIFNeuron(...): ...

A registry knows no concrete item: the owning package imports its item modules once (so that they register), and a
user's own item needs only its file to be imported before use.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from spikeforge.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> item (a class or a factory). Unknown names are a :class:`ConfigError` that lists the known ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None, *, overwrite: bool = False):
        """``@registry.register("name")`` on a class or function, or ``registry.register("name", item)``."""

        def add(obj: T) -> T:
            key = str(name)
            if key in self._items and not overwrite and self._items[key] is not obj:
                raise ConfigError(f"{self.kind} {key!r} is already registered; pass overwrite=True to replace it")
            self._items[key] = obj
            return obj

        return add(item) if item is not None else add

    def unregister(self, name: str) -> T:
        """Remove ``name`` (e.g. a test's temporary item) and return its item."""
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {self.names()}")
        return self._items.pop(name)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {self.names()}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def items(self):
        return sorted(self._items.items())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def factory(registry: Registry[Callable[..., T]], name: str, /, *args, **kwargs) -> T:
    """Build the item registered under ``name``: ``registry.get(name)(*args, **kwargs)``."""
    return registry.get(name)(*args, **kwargs)
