"""Views bound to their collaborators: what the composition root hands each view.

Faust builds a view from its class with only the app. Instead of reaching into the
app for what it needs, a view declares its collaborators as class attributes and
``register`` routes a subclass carrying them (one per app, so two apps in a process
share nothing).
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from faust.web import View

V = TypeVar("V", bound=View)


def bound(view: type[V], **collaborators: Any) -> type[V]:
    """A subclass of ``view`` with ``collaborators`` as class attributes."""
    ours = [cls for cls in view.__mro__ if not cls.__module__.startswith(("faust.", "mode."))]
    declared = {name for cls in ours for name in vars(cls).get("__annotations__", {})}
    missing = {name for name in declared if not hasattr(view, name)} - set(collaborators)
    if missing:
        raise TypeError(f"{view.__name__} needs {', '.join(sorted(missing))}")
    names = {"__module__": view.__module__, "__qualname__": view.__qualname__}
    return cast(type[V], type(view.__name__, (view,), {**names, **collaborators}))
