"""The workflow document and its validation. Everything that can be checked before a user's message arrives is
checked here, at save (`ai-assistant workflow validate`) and at start (loader.py), each refusal naming the node:
unknown node kinds and fields, edges to nowhere or by a label the node cannot take, unreachable nodes, cycles with no
way out, template variables no node sets, secrets that are not set, HTTP hosts outside the allowlist."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from . import templates
from .errors import WorkflowError
from .nodes import KINDS, NodeBase
from .nodes.http import HttpNode, url_host
from .nodes.simple import ReplyNode
from .nodes.trigger import TriggerNode


class HttpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow_hosts: list[str] = Field(default_factory=list)
    # Private, loopback and link-local addresses are refused unless this is true (an intranet system; the tests).
    allow_private: bool = False
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    max_response_bytes: int = Field(default=262_144, ge=1, le=16 * 1024 * 1024)


class WorkflowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    http: HttpSettings = Field(default_factory=HttpSettings)
    max_steps: int = Field(default=50, ge=1, le=1000)  # a loop that does not end stops here, with error_reply
    error_reply: str = "Sorry, I could not complete that request. Please try again later or ask a colleague."


class Edge(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    when: str = "next"


class Workflow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    version: int = Field(ge=1)
    name: str = ""
    description: str = ""
    enabled: bool = True
    settings: WorkflowSettings = Field(default_factory=WorkflowSettings)
    nodes: list[Any]  # NodeBase subclasses, parsed one by one so that an error names its node
    edges: list[Edge] = Field(default_factory=list)
    _by_id: dict[str, NodeBase] = PrivateAttr(default_factory=dict)
    _next: dict[tuple[str, str], str] = PrivateAttr(default_factory=dict)

    def node(self, node_id: str) -> NodeBase:
        return self._by_id[node_id]

    @property
    def trigger(self) -> TriggerNode:
        return next(n for n in self.nodes if isinstance(n, TriggerNode))

    def next_node(self, node_id: str, label: str) -> str | None:
        return self._next.get((node_id, label))

    def model_post_init(self, context: Any) -> None:
        self._by_id = {n.id: n for n in self.nodes}
        self._next = {(e.source, e.when): e.target for e in self.edges}


def _pydantic_problem(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    message = str(err["msg"]).removeprefix("Value error, ")
    return where, message


def parse(data: Any, file: str, env: Mapping[str, str] | None = None) -> Workflow:
    """A validated workflow from a loaded YAML document, or WorkflowError naming the file and the node."""
    env = os.environ if env is None else env
    if not isinstance(data, dict):
        raise WorkflowError(file, "", "must be a mapping with id, version, nodes and edges")
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise WorkflowError(file, "nodes", "must be a non-empty list of nodes")
    nodes: list[NodeBase] = []
    for index, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict):
            raise WorkflowError(file, f"nodes[{index}]", "must be a mapping with id and kind")
        label = f"node {raw.get('id')}" if isinstance(raw.get("id"), str) else f"nodes[{index}]"
        kind = raw.get("kind")
        if kind not in KINDS:
            raise WorkflowError(file, label, f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
        try:
            nodes.append(KINDS[kind].model_validate(raw))
        except ValidationError as exc:
            where, message = _pydantic_problem(exc)
            raise WorkflowError(file, f"{label}: {where}", message) from None
    try:
        flow = Workflow.model_validate({**data, "nodes": nodes})
    except ValidationError as exc:
        where, message = _pydantic_problem(exc)
        raise WorkflowError(file, where, message) from None
    _check_graph(flow, file)
    _check_templates(flow, file, env)
    return flow


def _check_graph(flow: Workflow, file: str) -> None:
    ids: set[str] = set()
    for node in flow.nodes:
        if node.id in ids:
            raise WorkflowError(file, f"node {node.id}", "id is used by two nodes")
        ids.add(node.id)
    triggers = [n.id for n in flow.nodes if isinstance(n, TriggerNode)]
    if len(triggers) != 1:
        raise WorkflowError(file, "nodes", f"needs exactly one trigger node (found {len(triggers)})")
    out: dict[str, dict[str, str]] = {n.id: {} for n in flow.nodes}
    for index, edge in enumerate(flow.edges):
        where = f"edges[{index}]"
        for end in (edge.source, edge.target):
            if end not in ids:
                raise WorkflowError(file, where, f"node {end} does not exist")
        labels = flow.node(edge.source).edge_labels()
        if edge.when not in labels:
            allowed = ", ".join(labels) or "none: it ends the run"
            raise WorkflowError(file, f"node {edge.source}", f"has an edge on {edge.when!r}; allowed: {allowed}")
        if edge.when in out[edge.source]:
            raise WorkflowError(file, f"node {edge.source}", f"has two edges on {edge.when!r}")
        if edge.target == triggers[0]:
            raise WorkflowError(file, f"node {edge.target}", "is the trigger; no edge may lead back to it")
        out[edge.source][edge.when] = edge.target
    for node in flow.nodes:
        if not node.terminal and not out[node.id]:
            raise WorkflowError(file, f"node {node.id}", f"has no outgoing edge: the {node.kind} result goes nowhere")
    reachable = _reach({triggers[0]}, lambda n: out[n].values())
    for node in flow.nodes:
        if node.id not in reachable:
            raise WorkflowError(file, f"node {node.id}", "is unreachable from the trigger")
    # A node is an exit if the run can end there: it ends the run, or one of its labels has no edge.
    exits = {n.id for n in flow.nodes if not n.edge_labels() or set(n.edge_labels()) - set(out[n.id])}
    incoming: dict[str, set[str]] = {n: set() for n in ids}
    for source, targets in out.items():
        for target in targets.values():
            incoming[target].add(source)
    can_end = _reach(exits, lambda n: incoming[n])
    for node in flow.nodes:
        if node.id not in can_end:
            raise WorkflowError(file, f"node {node.id}", "is in a cycle with no way out (no path from it ends the run)")
    if not any(isinstance(n, ReplyNode) for n in flow.nodes):
        raise WorkflowError(file, "nodes", "has no reply node: the user would get no answer")


def _reach(start: set[str], step: Any) -> set[str]:
    seen, todo = set(start), list(start)
    while todo:
        for nxt in step(todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _check_templates(flow: Workflow, file: str, env: Mapping[str, str]) -> None:
    variables = set().union(*(n.sets() for n in flow.nodes))
    node_ids = {n.id for n in flow.nodes}
    for node in flow.nodes:
        for where, source, extra in node.templates():
            found = templates.problems(
                source, roots=templates.BASE_ROOTS | extra, variables=variables, node_ids=node_ids, secrets=env
            )
            if found:
                raise WorkflowError(file, f"node {node.id}: {where}", "; ".join(found))
        if isinstance(node, HttpNode):
            host = url_host(node.url)
            allowed = {h.lower() for h in flow.settings.http.allow_hosts}
            if host not in allowed:
                raise WorkflowError(file, f"node {node.id}: url", f"host {host} is not in settings.http.allow_hosts")


def secret_names(flow: Workflow) -> set[str]:
    """The environment variables the workflow's headers read (so the log scrubber can hide their values)."""
    names: set[str] = set()
    for node in flow.nodes:
        if isinstance(node, HttpNode):
            for value in node.headers.values():
                names.update(templates.secret_refs(value))
    return names
