"""Templates in workflow documents: Jinja2's sandboxed environment, undefined variables an error, checked at save.

A template sees `message` (the inbound message's text and ids), `vars` (values set by earlier nodes), `nodes` (each
finished node's outputs by node id); an HTTP node's headers also see `secrets` (environment variables), and its
response mapping sees `response`. Checking at save catches a misspelt variable before a user meets it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.meta import find_undeclared_variables
from jinja2.sandbox import SandboxedEnvironment

ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)

MESSAGE_FIELDS = frozenset({"text", "user_id", "chat_id", "connector", "event_id", "thread_id", "is_group"})
BASE_ROOTS = frozenset({"message", "vars", "nodes"})


def problems(
    source: str,
    *,
    roots: Iterable[str],
    variables: set[str],
    node_ids: set[str],
    secrets: Mapping[str, str] | None = None,
) -> list[str]:
    """What is wrong with a template, as short sentences (empty if nothing): bad syntax, unknown top-level names,
    `vars.X` that no node sets, `nodes.X` that is no node, `secrets.X` that is not set."""
    try:
        tree = ENV.parse(source)
        ENV.from_string(source)  # unknown filters and tests are found when compiling, not parsing
    except TemplateSyntaxError as exc:
        return [f"template error: {exc.message}"]
    allowed = set(roots)
    found = [f"unknown variable {name!r}" for name in sorted(find_undeclared_variables(tree) - allowed)]
    for ref in tree.find_all(nodes.Getattr):
        if not isinstance(ref.node, nodes.Name):
            continue
        root, attr = ref.node.name, ref.attr
        if root == "vars" and attr not in variables:
            found.append(f"unknown variable 'vars.{attr}' (no node sets it)")
        elif root == "nodes" and attr not in node_ids:
            found.append(f"unknown node 'nodes.{attr}'")
        elif root == "message" and attr not in MESSAGE_FIELDS:
            found.append(f"unknown variable 'message.{attr}' (known: {', '.join(sorted(MESSAGE_FIELDS))})")
        elif root == "secrets" and "secrets" in allowed and (secrets is None or attr not in secrets):
            found.append(f"secret {attr!r} is not set (environment variable {attr})")
    return found


def render(source: str, context: Mapping[str, Any]) -> str:
    return ENV.from_string(source).render(**context)


def secret_refs(source: str) -> set[str]:
    """The `secrets.NAME` a template reads."""
    try:
        tree = ENV.parse(source)
    except TemplateSyntaxError:
        return set()
    return {
        ref.attr
        for ref in tree.find_all(nodes.Getattr)
        if isinstance(ref.node, nodes.Name) and ref.node.name == "secrets"
    }
