"""Views get their collaborators from the root (web/binding.py), one subclass per app."""

from __future__ import annotations

import pytest
from faust.web import View

from web.binding import bound
from web.health import HealthView
from web.stats import StatsView


def test_a_bound_view_carries_its_collaborators_and_keeps_its_name() -> None:
    health = object()
    made = bound(HealthView, health=health)
    assert issubclass(made, HealthView)
    assert made.health is health  # type: ignore[comparison-overlap]
    assert (made.__name__, made.__module__) == ("HealthView", "web.health")
    assert not hasattr(HealthView, "health")  # the class itself stays unbound


def test_two_apps_share_nothing() -> None:
    first, second = bound(HealthView, health=1), bound(HealthView, health=2)
    assert (first.health, second.health) == (1, 2)


def test_a_missing_collaborator_is_refused_at_registration() -> None:
    with pytest.raises(TypeError, match="StatsView needs database"):
        bound(StatsView, settings=object())


def test_fausts_own_annotations_are_not_collaborators() -> None:
    class Plain(View):
        pass

    assert bound(Plain) is not Plain
