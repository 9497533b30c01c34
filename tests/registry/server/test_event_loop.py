"""`CORRAL_EVENT_LOOP`: auto takes uvloop where it is installed, and a loop asked for by name but
not installed stops startup with one line, not a traceback."""

from __future__ import annotations

import sys

import pytest
import uvloop

from registry.config import SettingsError, load_settings
from registry.server.event_loop import EventLoopUnavailable, loop_factory


def test_auto_and_uvloop_take_uvloop_when_it_is_installed() -> None:
    assert loop_factory("auto") == ("uvloop", uvloop.new_event_loop)
    assert loop_factory("uvloop") == ("uvloop", uvloop.new_event_loop)
    assert loop_factory("asyncio") == ("asyncio", None)


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("auto") == ("asyncio", None)
    with pytest.raises(EventLoopUnavailable, match=r"CORRAL_EVENT_LOOP=uvloop.*not installed"):
        loop_factory("uvloop")


def test_the_setting_takes_only_known_loops() -> None:
    assert load_settings(env={"CORRAL_EVENT_LOOP": " UVloop "}).event_loop == "uvloop"
    assert load_settings(env={}).event_loop == "auto"
    with pytest.raises(SettingsError, match="CORRAL_EVENT_LOOP"):
        load_settings(env={"CORRAL_EVENT_LOOP": "tokio"})
