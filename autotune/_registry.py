"""Named choices written once: a registry maps a name to its implementation and a one-line help.

The configuration check, the CLI's ``choices`` and help text, and the code that runs the choice
all read the same registry, so a name registered here (by the package or by a test) is accepted
everywhere, and an unknown one is refused everywhere with the same list. Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from autotune.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    impl: T
    help: str  # one line, shown by ``--help``


class Registry(Generic[T]):
    """``name -> (implementation, help)`` in registration order (the order ``--help`` shows)."""

    def __init__(self, option: str) -> None:
        self.option = option  # the CLI option that picks a name, e.g. "--sampler": errors name it
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, impl: T, help: str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.option} {name!r} is registered already")
        if not name or not help.strip() or "\n" in help:
            raise ValueError(f"{self.option} {name!r}: a registered name needs a one-line help")
        self._entries[name] = Entry(name, impl, help.strip())

    def register(self, name: str, help: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def add(impl: T) -> T:
            self.add(name, impl, help)
            return impl

        return add

    def remove(self, name: str) -> None:
        del self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def check(self, name: str) -> str:
        """``name``, or a one-line :class:`UserError` listing the registered names."""
        if name not in self._entries:
            raise UserError(f"{self.option} {name!r}: choose one of {', '.join(self._entries)}")
        return name

    def get(self, name: str) -> T:
        return self._entries[self.check(name)].impl

    def help(self, name: str) -> str:
        return self._entries[self.check(name)].help

    def cli(self, what: str, default: str) -> dict[str, Any]:
        """``add_argument`` keywords: the names as ``choices`` (argparse then refuses an unknown
        one in one line listing them) and a help text built from the one-line helps."""
        items = "; ".join(f"{e.name}: {e.help}" for e in self._entries.values())
        return {
            "default": self.check(default),
            "choices": self.names(),
            "help": f"{what} (default: {default}). {items}".replace("%", "%%"),
        }
