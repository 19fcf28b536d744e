"""Chat commands, answered before the engine: `/reset`, `/help`, and the commands plugins declare in plugin.toml.

A command's reply goes through the same checkpoint and delivery as any answer (pipeline/worker.py), so it is sent
exactly once; `/reset` clears the memory in that same fenced checkpoint, so a crash can neither clear it twice nor
clear it without the user being told. A command a plugin declares is not answered here: the message goes on to the
engine (or to whatever the plugin hooks into) as ordinary text, so declaring it only makes it known to /help.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# `/name`, optionally `/name@botname` (Telegram appends the bot's name in groups), then arguments.
_COMMAND = re.compile(r"^/([A-Za-z][A-Za-z0-9_]{0,31})(?:@\S+)?(?:\s+(.*))?$", re.DOTALL)

RESET_REPLY = "Done: I have forgotten our conversation here. The next message starts afresh."
HELP_HEADER = "Ask me anything in plain words. Commands:"
UNKNOWN_REPLY = "Unknown command /{name}."
RESET_OUTCOME = "reset"  # checkpointed with the reply; counted as `answered` in ai_assistant_answers_total


@dataclass(frozen=True)
class Command:
    name: str
    description: str
    source: str = "built-in"  # or "plugin <name>"


BUILT_IN = (
    Command("help", "list the commands"),
    Command("reset", "forget our conversation so far (in this chat, thread or, in groups, for you)"),
)


@dataclass(frozen=True)
class Handled:
    """A command answered here: the reply, and its outcome (RESET_OUTCOME makes the checkpoint clear the memory)."""

    reply: str
    outcome: str


class Commands:
    def __init__(self, plugin_commands: Iterable[Command] = ()) -> None:
        self.commands: dict[str, Command] = {c.name: c for c in BUILT_IN}
        for command in plugin_commands:
            if command.name in self.commands:  # a plugin cannot take over /reset or another plugin's command
                log.warning("%s declares /%s, which is taken; ignored", command.source, command.name)
                continue
            self.commands[command.name] = command

    def handle(self, text: str) -> Handled | None:
        """The answer to a command, or None for ordinary text and for plugin commands (they go on to the engine)."""
        match = _COMMAND.match(text.strip())
        if match is None:
            return None
        name = match.group(1).lower()
        if name == "reset":
            return Handled(RESET_REPLY, RESET_OUTCOME)
        if name == "help":
            return Handled(self.help_text(), "answered")
        if name in self.commands:
            return None
        return Handled(f"{UNKNOWN_REPLY.format(name=name)} {self.help_text()}", "answered")

    def help_text(self) -> str:
        lines = [f"/{c.name}: {c.description}" if c.description else f"/{c.name}" for c in self.commands.values()]
        return "\n".join([HELP_HEADER, *lines])


def plugin_commands(config_dir: Path, data_dir: Path) -> list[Command]:
    """The commands of every enabled plugin whose files still verify (the same check that decides whether it loads)."""
    from ..plugins.manager import PluginManager
    from ..plugins.settings import load_plugin_settings

    found: list[Command] = []
    for item in PluginManager(data_dir, load_plugin_settings(config_dir)).check_all():
        if item.status == "enabled" and item.manifest is not None:
            source = f"plugin {item.record.name}"
            found.extend(Command(c.name, c.description, source) for c in item.manifest.commands)
    return found
