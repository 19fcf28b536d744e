"""Conversations and dead letters pages through the real app. The store rows are made through a second real
SQLiteStore on the same file, as `ai-assistant dlq` works on the store whether the service runs or not."""

from __future__ import annotations

import asyncio
import time

from ai_assistant.console.conversations_page import PAGE_SIZE
from ai_assistant.console.store import ConsoleStore
from ai_assistant.messages import ChatTurn, InboundMessage
from ai_assistant.store.sqlite import SQLiteStore
from tests.console.conftest import VIEWER_PASSWORD, Console


def inbound(event_id: str, chat: str, text: str) -> InboundMessage:
    return InboundMessage(
        connector="im", event_id=event_id, chat_id=chat, user_id="u-1", text=text, received_at=time.time()
    )


def dead_letter(console: Console, event_id: str, text: str) -> str:
    async def make() -> str:
        store = SQLiteStore(console.data_dir / "state.sqlite3")
        try:
            assert await store.enqueue(inbound(event_id, "chat-dead", text), 600)
            job = await store.claim(30)
            assert job is not None
            assert await store.dead_letter(job.id, job.lease_token, "reply_url refused: 503")
            return job.id
        finally:
            await store.close()

    return asyncio.run(make())


def remember(console: Console, chat: str, exchanges: list[tuple[str, str]]) -> None:
    async def make() -> None:
        store = SQLiteStore(console.data_dir / "state.sqlite3")
        try:
            for i, (question, answer) in enumerate(exchanges):
                assert await store.enqueue(inbound(f"{chat}-{i}", chat, question), 600)
                job = await store.claim(30)
                assert job is not None
                turns = [ChatTurn("user", question), ChatTurn("assistant", answer)]
                assert await store.save_answer(job.id, job.lease_token, answer, "answered", f"im:{chat}", turns, 500)
                assert await store.complete(job.id, job.lease_token)
        finally:
            await store.close()

    asyncio.run(make())


def audit_actions(console: Console) -> list[str]:
    return [e.action for e in ConsoleStore.in_data_dir(console.data_dir).audit_entries()]


def test_dead_letters_list_show_replay_and_drop(console: Console) -> None:
    first = dead_letter(console, "ev-1", "Where is the VPN guide?")
    second = dead_letter(console, "ev-2", "Second question")
    console.login()
    listing = console.client.get("/admin/dead-letters")
    assert listing.status_code == 200 and 'id="dead-count">(2)' in listing.text
    assert "reply_url refused: 503" in listing.text
    assert "Where is the VPN guide?" not in listing.text  # a list shows no message text, as `dlq list`
    shown = console.client.get(f"/admin/dead-letters/{first}")
    assert shown.status_code == 200 and "Where is the VPN guide?" in shown.text

    replayed = console.post(f"/admin/dead-letters/{first}/replay", page="/admin/dead-letters")
    assert replayed.status_code == 303
    dropped = console.post(f"/admin/dead-letters/{second}/drop", page="/admin/dead-letters")
    assert dropped.status_code == 303
    after = console.client.get("/admin/dead-letters")
    assert 'id="dead-count">(0)' in after.text

    async def queued() -> int:
        store = SQLiteStore(console.data_dir / "state.sqlite3")
        try:
            return (await store.stats()).depth
        finally:
            await store.close()

    assert asyncio.run(queued()) == 1  # the replayed one is back in the queue; the dropped one is gone
    assert {"dead_letter.replay", "dead_letter.drop"} <= set(audit_actions(console))
    again = console.post(f"/admin/dead-letters/{first}/replay", page="/admin/dead-letters")
    assert again.status_code == 404  # no longer a dead letter: nothing is done twice
    assert console.client.get("/admin/dead-letters/nope").status_code == 404


def test_dead_letter_changes_need_csrf_and_an_admin(console: Console) -> None:
    job = dead_letter(console, "ev-3", "Question")
    console.login()
    forged = console.client.post(f"/admin/dead-letters/{job}/drop", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    console.client.cookies.clear()
    console.login("victor", VIEWER_PASSWORD)
    page = console.client.get("/admin/dead-letters")
    assert f'id="replay-{job}"' not in page.text
    refused = console.post(f"/admin/dead-letters/{job}/replay", page="/admin/dead-letters")
    assert refused.status_code == 403
    assert 'id="dead-count">(1)' in console.client.get("/admin/dead-letters").text
    assert not [a for a in audit_actions(console) if a.startswith("dead_letter.")]


def test_conversations_are_listed_by_recency_and_paged(console: Console) -> None:
    remember(console, "old-chat", [("How do I reset my password?", "Use the self-service portal.")])
    remember(console, "busy-chat", [(f"question {i}", f"answer {i}") for i in range(PAGE_SIZE // 2 + 5)])
    console.login("victor", VIEWER_PASSWORD)  # read-only: a viewer sees it all
    listing = console.client.get("/admin/conversations")
    assert listing.status_code == 200
    assert listing.text.index("im:busy-chat") < listing.text.index("im:old-chat")
    busy = console.client.get("/admin/conversations/view", params={"key": "im:busy-chat"})
    assert busy.status_code == 200
    total = 2 * (PAGE_SIZE // 2 + 5)
    assert f"of {total} held in memory" in busy.text and 'id="next"' in busy.text
    assert "question 0" in busy.text and f"answer {PAGE_SIZE // 2 + 4}" not in busy.text
    second = console.client.get("/admin/conversations/view", params={"key": "im:busy-chat", "page": "1"})
    assert f"answer {PAGE_SIZE // 2 + 4}" in second.text and 'id="next"' not in second.text
    old = console.client.get("/admin/conversations", params={"key": "im:old-chat"})
    assert "Use the self-service portal." in old.text


def test_conversation_lookup_errors_name_the_field(console: Console) -> None:
    console.login()
    for key, problem in (("  ", "type a conversation key"), ("no-colon", "is &lt;connector&gt;:&lt;chat id&gt;"),
                         ("x:" + "y" * 300, "longer than 300 characters")):  # fmt: skip
        page = console.client.get("/admin/conversations", params={"key": key})
        assert page.status_code == 400 and 'id="error-key"' in page.text and problem in page.text, key
    bad_page = console.client.get("/admin/conversations", params={"page": "-1"})
    assert bad_page.status_code == 400 and 'id="error-page"' in bad_page.text
    unknown = console.client.get("/admin/conversations/view", params={"key": "im:never"})
    assert unknown.status_code == 200 and 'id="no-turns"' in unknown.text
