"""STAGING_ENABLED: with it off the staging poller's timer is never added to the app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import faust
import pytest

from agents import poll_staging
from app.intake.process_pool import ProcessPool
from app.kafka.publisher import Publisher
from app.models import DateWindow
from app.settings import Settings
from app.storage.database import Database


class TimerApp:
    """What poll_staging.register asks of the app: timers, remembered by name."""

    def __init__(self) -> None:
        self.timers: list[str] = []

    def timer(self, interval: float, *, on_leader: bool, name: str) -> Callable[[Any], Any]:
        self.timers.append(name)
        return lambda function: function


@pytest.mark.parametrize(("enabled", "timers"), [(True, ["poll_staging"]), (False, [])])
def test_the_staging_timer_runs_only_when_staging_is_enabled(
    enabled: bool, timers: list[str]
) -> None:
    app = TimerApp()
    settings = Settings(staging_enabled=enabled)
    poll_staging.register(
        cast(faust.App, app),
        settings=settings,
        database=cast(Database, None),
        publisher=cast(Publisher, None),
        window=DateWindow.of(settings),
        helpers=cast(ProcessPool, None),
    )
    assert app.timers == timers
