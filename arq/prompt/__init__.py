"""Prompt building: a reasoning schema, a context and examples rendered into chat messages."""

from arq.prompt.builder import DEFAULT_SECTIONS, Message, PromptBuilder, Request, Section
from arq.prompt.skeleton import render_skeleton

__all__ = ["DEFAULT_SECTIONS", "Message", "PromptBuilder", "Request", "Section", "render_skeleton"]
