"""One generic registry for guidance terms, policy losses, advantage estimators, acquisition
strategies and offline learners.

Registering a name twice raises; an unknown name raises with the list of valid names; keys are
snake_case (verl's registries allowed silent overwrites and mixed-case keys: both fixed here).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


class Registry(Generic[T]):
    """A name -> object table with strict registration and helpful look-up errors.

    Args:
        kind: what the registry holds, used in error messages (e.g. "guidance term").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")`` adds the decorated object under ``name``."""
        if not _SNAKE.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be snake_case (a-z, 0-9, _)")

        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Look ``name`` up; raise ``KeyError`` naming the valid choices when it is unknown."""
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            raise KeyError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
