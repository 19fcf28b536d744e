"""Lanes by request type: the classification rule an operator reads in docs/architecture.md, the worker pools a
configuration gives, and the one-line errors for a bad `lanes` section."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ai_assistant.errors import ConfigError
from ai_assistant.messages import Attachment, InboundMessage
from ai_assistant.pipeline.lanes import classify, pools
from ai_assistant.pipeline.supervisor import Workers
from ai_assistant.settings import LaneSettings, WorkerSettings, load_settings
from ai_assistant.store.base import SHED_QUOTA


def msg(text: str = "What are the office hours?", *kinds: str) -> InboundMessage:
    attachments = [Attachment(kind=kind, data_b64="AA==") for kind in kinds]
    return InboundMessage(connector="im", event_id="e", chat_id="c", user_id="u", text=text, attachments=attachments)


@pytest.mark.parametrize(
    ("message", "lane"),
    [
        (msg(), "text"),
        (msg("", "image"), "media"),
        (msg("what does this say?", "voice"), "media"),
        (msg("x" * 5000, "file"), "media"),  # an attachment decides before the length does
        (msg("x" * 1499), "text"),
        (msg("x" * 1500), "long"),
        (msg("Please SUMMARIZE the minutes"), "long"),
        (msg("Summary of the week?"), "text"),  # a keyword is matched as written, not as a word stem
    ],
)
def test_the_rule_in_its_order(message: InboundMessage, lane: str) -> None:
    assert classify(message, LaneSettings(long_keywords=["summarize"])) == lane


def test_a_canned_reply_over_a_quota_is_text_whatever_the_message() -> None:
    assert classify(msg("", "image"), LaneSettings(), shed=SHED_QUOTA) == "text"


def test_length_rule_off_leaves_only_keywords() -> None:
    lanes = LaneSettings(long_min_chars=0, long_keywords=["write a report"])
    assert classify(msg("x" * 50_000), lanes) == "text"
    assert classify(msg("Write a report on Q3"), lanes) == "long"


def test_each_lane_gets_its_pool_and_a_lane_without_workers_goes_to_the_text_workers() -> None:
    worker = WorkerSettings(concurrency=4)
    assert pools(worker, LaneSettings(long_workers=2, media_workers=1)) == [
        ("text", 4, ("text",)),
        ("long", 2, ("long",)),
        ("media", 1, ("media",)),
    ]
    assert pools(worker, LaneSettings(long_workers=0, media_workers=2)) == [
        ("text", 4, ("text", "long")),
        ("media", 2, ("media",)),
    ]
    assert pools(worker, LaneSettings(long_workers=0, media_workers=0)) == [("text", 4, ("text", "long", "media"))]


def test_workers_are_named_by_lane_and_none_run_when_disabled() -> None:
    workers = Workers(object(), WorkerSettings(concurrency=2), LaneSettings(long_workers=1, media_workers=1))
    assert [(s.name, s.lanes) for s in workers.states] == [
        ("text-worker-0", ("text",)),
        ("text-worker-1", ("text",)),
        ("long-worker-0", ("long",)),
        ("media-worker-0", ("media",)),
    ]
    assert Workers(object(), WorkerSettings(enabled=False), LaneSettings()).states == []


@pytest.mark.parametrize(
    ("lanes", "expected"),
    [
        ({"media_workers": -1}, "lanes.media_workers:"),
        ({"long_keywords": ["summarize", " "]}, "lanes.long_keywords: a keyword is empty"),
        ({"fast_workers": 1}, "lanes.fast_workers: unknown key"),
    ],
)
def test_a_bad_lanes_section_is_one_line(tmp_path: Path, lanes: dict[str, object], expected: str) -> None:
    (tmp_path / "assistant.yaml").write_text(yaml.safe_dump({"lanes": lanes}))
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, tmp_path / "data")
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)
