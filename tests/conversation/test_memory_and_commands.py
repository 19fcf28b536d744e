"""Issue 21, item 3: memory per chat, thread or group member, `/reset`, `/help` with a plugin's commands. The real
pipeline and stores (SQLite, and Redis for the fenced reset), the real engine client against the stand-in model
server process that records every prompt (tests/faults/engine_standin.py: what matters is what the model is sent,
not its words); the platform is a recording channel."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ai_assistant.engines.hf_inference import HFInferenceEngine
from ai_assistant.pipeline.commands import RESET_REPLY, Commands, plugin_commands
from ai_assistant.settings import EngineSettings
from ai_assistant.store import StateStore
from ai_assistant.store.sqlite import SQLiteStore
from tests.faults.engine_standin import ANSWER
from tests.faults.procs import EngineStandin
from tests.plugins.conftest import Env

from .conftest import Harness, harness, message

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineStandin]:
    proc = EngineStandin(tmp_path_factory.mktemp("engine")).start()
    yield proc
    proc.kill()


def make(tmp_path: Path, store: StateStore, standin: EngineStandin, **options: Any) -> Harness:
    engine = HFInferenceEngine(EngineSettings(base_url=standin.base_url, max_tokens=16))
    return harness(tmp_path, store, engine, **options)


def prompts(standin: EngineStandin) -> list[str]:
    """The user and assistant turns of each prompt the model was sent, as one text per request."""
    return ["\n".join(m["content"] for m in r["body"]["messages"] if m["role"] != "system") for r in standin.requests()]


def group(event: str, text: str, user: str, thread: str | None = None) -> Any:
    return message(event, text, user=user, chat="g1", is_group=True, thread_id=thread)


async def test_two_users_in_one_group_keep_separate_memories(
    tmp_path: Path, store: StateStore, standin: EngineStandin
) -> None:
    h = make(tmp_path, store, standin)  # memory.scope defaults to user
    seen = len(standin.requests())
    await h.ask(group("a1", "alice-first", "alice"))
    await h.ask(group("b1", "bob-first", "bob"))
    await h.ask(group("a2", "alice-second", "alice"))
    alice_second = prompts(standin)[seen + 2]
    assert "alice-first" in alice_second and "bob-first" not in alice_second, alice_second
    assert [t.content for t in await store.history("im:g1:user:bob", 10)] == ["bob-first", ANSWER]
    assert await store.history("im:g1", 10) == [], "nothing lands in the shared group history"


@pytest.mark.parametrize(
    ("scope", "shared"),
    [("chat", {"bob": True, "other-thread": True}), ("thread", {"bob": True, "other-thread": False})],
)
async def test_chat_and_thread_scopes(
    tmp_path: Path, store: StateStore, standin: EngineStandin, scope: str, shared: dict[str, bool]
) -> None:
    h = make(tmp_path, store, standin, memory={"scope": scope})
    await h.ask(group("a1", "alice-in-t1", "alice", thread="t1"))
    seen = len(standin.requests())
    await h.ask(group("b1", "bob-in-t1", "bob", thread="t1"))
    await h.ask(group("c1", "carol-in-t2", "carol", thread="t2"))
    bob, other = prompts(standin)[seen:]
    assert ("alice-in-t1" in bob) is shared["bob"]
    assert ("alice-in-t1" in other) is shared["other-thread"]


async def test_reset_clears_only_this_scope_without_asking_the_model(
    tmp_path: Path, store: StateStore, standin: EngineStandin
) -> None:
    h = make(tmp_path, store, standin)
    await h.ask(group("a1", "alice-first", "alice"))
    await h.ask(group("b1", "bob-first", "bob"))
    seen = len(standin.requests())
    assert await h.ask(group("r1", "/reset", "alice")) == RESET_REPLY
    assert len(standin.requests()) == seen, "a command is answered before the engine"
    assert await store.history("im:g1:user:alice", 10) == []
    assert len(await store.history("im:g1:user:bob", 10)) == 2, "bob's memory is his own"
    await h.ask(group("a2", "alice-again", "alice"))
    assert "alice-first" not in prompts(standin)[-1]
    assert h.channel.texts().count(RESET_REPLY) == 1, "answered once, like any reply"


async def test_reset_checkpoint_is_fenced(tmp_path: Path, store: StateStore, standin: EngineStandin) -> None:
    """A worker whose lease passed to another cannot clear the memory: the reset is part of the fenced checkpoint."""
    h = make(tmp_path, store, standin)
    await h.ask(message("a1", "remember-me"))
    assert await store.enqueue(message("r1", "/reset"), 60)
    stale = await store.claim(0.01)
    assert stale is not None
    current = None
    for _ in range(600):  # the first lease runs out; another worker claims the job (bounded: 60 s at most)
        current = await store.claim(30)
        if current is not None:
            break
        await asyncio.sleep(0.1)
    assert current is not None and current.lease_token != stale.lease_token
    assert not await store.save_answer(stale.id, stale.lease_token, RESET_REPLY, "reset", "im:c1", [], 0)
    assert len(await store.history("im:c1", 10)) == 2, "the stale worker's reset changed nothing"
    await h.pipeline.process(current)
    assert await store.history("im:c1", 10) == []


WEATHER_PLUGIN = "class Plugin:\n    name = 'weather'\n\n    async def deliver(self, part) -> None:\n        pass\n"


@pytest.fixture
def plugin_env(tmp_path: Path) -> Env:
    """An installed, signed plugin that declares a command in its plugin.toml."""
    dirs = [tmp_path / d for d in ("config", "data", "work")]
    for d in dirs:
        d.mkdir()
    env = Env(*dirs[:2], Ed25519PrivateKey.generate(), dirs[2])
    env.write_settings()
    src = env.custom_source("weather", {"weather_plugin.py": WEATHER_PLUGIN})
    with (src / "plugin.toml").open("a") as toml:
        toml.write('commands = [{ name = "weather", description = "the weather in a city" }]\n')
    env.manager().install(env.archive(src).as_uri(), "channel", "weather")
    return env


async def test_help_lists_plugin_commands_which_go_on_to_the_model(
    tmp_path: Path, plugin_env: Env, standin: EngineStandin
) -> None:
    store = SQLiteStore(tmp_path / "state.sqlite3")
    try:
        commands = Commands(plugin_commands(plugin_env.config_dir, plugin_env.data_dir))
        h = make(tmp_path, store, standin, commands=commands)
        seen = len(standin.requests())
        help_text = await h.ask(message("h1", "/help"))
        assert "/weather: the weather in a city" in help_text and "/reset:" in help_text, help_text
        unknown = await h.ask(message("u1", "/nosuch thing"))
        assert unknown.startswith("Unknown command /nosuch.") and "/weather" in unknown
        assert len(standin.requests()) == seen, "built-in and unknown commands never reach the model"
        assert await h.ask(message("w1", "/weather Paris")) == ANSWER
        assert "/weather Paris" in prompts(standin)[-1]
        assert await h.ask(message("p1", "/usr/bin is a path, not a command")) == ANSWER
    finally:
        await store.close()


async def test_a_disabled_plugins_commands_are_not_listed(plugin_env: Env) -> None:
    plugin_env.manager().set_enabled("weather", False)
    assert plugin_commands(plugin_env.config_dir, plugin_env.data_dir) == []


async def test_the_posted_message_id_is_a_fenced_checkpoint(store: StateStore) -> None:
    """Progressive replies (pipeline/progressive.py) checkpoint the id of the message they posted; the next claim of
    the job carries it, and a worker that lost its lease cannot overwrite it."""
    assert await store.enqueue(message("p1", "hello"), 60)
    stale = await store.claim(0.01)
    assert stale is not None and stale.reply_ref is None
    current = None
    for _ in range(600):  # bounded: 60 s at most for the short lease to run out
        current = await store.claim(30)
        if current is not None:
            break
        await asyncio.sleep(0.1)
    assert current is not None
    assert not await store.save_reply_ref(stale.id, stale.lease_token, "from-the-stale-worker")
    assert await store.save_reply_ref(current.id, current.lease_token, "1700000000.000100")
    assert await store.release(current.id, current.lease_token, 0.0, "crash", count_attempt=False)
    again = await store.claim(30)
    assert again is not None and again.reply_ref == "1700000000.000100"
