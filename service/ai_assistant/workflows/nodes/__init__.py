"""The node kinds a workflow is made of; `KINDS` maps each `kind:` value to its model."""

from __future__ import annotations

from .base import NodeBase, Outcome, RunContext, Services
from .handoff import HandoffNode
from .http import HttpNode
from .llm import KnowledgeNode, LlmNode
from .simple import EndNode, ReplyNode, SetNode
from .trigger import BranchNode, TriggerNode

KINDS: dict[str, type[NodeBase]] = {
    "trigger": TriggerNode,
    "branch": BranchNode,
    "knowledge": KnowledgeNode,
    "llm": LlmNode,
    "http": HttpNode,
    "set": SetNode,
    "reply": ReplyNode,
    "handoff": HandoffNode,
    "end": EndNode,
}

Node = TriggerNode | BranchNode | KnowledgeNode | LlmNode | HttpNode | SetNode | ReplyNode | HandoffNode | EndNode

__all__ = ["KINDS", "Node", "NodeBase", "Outcome", "RunContext", "Services"]
