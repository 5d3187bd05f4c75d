"""Prompts and completions, as attributes: which keys carry them, and how much text they hold.

Each group is one convention's way of carrying the same text, so only the best group
present is counted (OpenInference sends the same prompt as llm.input_messages.* and as
input.value). Rank: lower wins. Content is private: the mapper keeps only its size and a
hash unless configured to capture it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from collectors.capping import MAX_JSON_DEPTH

__all__ = ["ContentItem", "content_group", "measure_content"]

# (attribute key, value, direction, rank), for each content attribute of one span.
ContentItem = tuple[str, Any, str, int]

_PROMPT, _COMPLETION, _UNCOUNTED = "prompt", "completion", ""

_CONTENT_KEYS: dict[str, tuple[str, int]] = {
    "gen_ai.input.messages": (_PROMPT, 0),  # OTel GenAI
    "gen_ai.system_instructions": (_PROMPT, 0),  # OTel GenAI (package): part of the same prompt
    "gen_ai.output.messages": (_COMPLETION, 0),  # OTel GenAI
    "input.value": (_PROMPT, 3),  # OpenInference
    "output.value": (_COMPLETION, 3),  # OpenInference
    "gen_ai.prompt": (_PROMPT, 4),  # OTel GenAI (deprecated)
    "gen_ai.completion": (_COMPLETION, 4),  # OTel GenAI (deprecated)
    "traceloop.entity.input": (_PROMPT, 5),  # OpenLLMetry
    "traceloop.entity.output": (_COMPLETION, 5),  # OpenLLMetry
    "langfuse.observation.input": (_PROMPT, 6),  # Langfuse
    "langfuse.observation.output": (_COMPLETION, 6),  # Langfuse
    # Private too, but not the call's prompt or completion: stripped, not counted.
    "langfuse.trace.input": (_UNCOUNTED, 0),  # Langfuse
    "langfuse.trace.output": (_UNCOUNTED, 0),  # Langfuse
    "gen_ai.tool.call.arguments": (_UNCOUNTED, 0),  # OTel GenAI (package)
    "gen_ai.tool.call.result": (_UNCOUNTED, 0),  # OTel GenAI (package)
    "gen_ai.retrieval.query.text": (_UNCOUNTED, 0),  # OTel GenAI (package)
    "gen_ai.retrieval.documents": (_UNCOUNTED, 0),  # OTel GenAI (package)
    "llm.prompt_template.variables": (_UNCOUNTED, 0),  # OpenInference (package)
}
# Flattened per message: the prefix is followed by the message index (gen_ai.prompt.0.content);
# `gen_ai.prompt.name` is a prompt's name, not content.
_CONTENT_PREFIXES: dict[str, tuple[str, int]] = {
    "gen_ai.prompt.": (_PROMPT, 1),  # OpenLLMetry
    "gen_ai.completion.": (_COMPLETION, 1),  # OpenLLMetry
    "llm.input_messages.": (_PROMPT, 2),  # OpenInference
    "llm.prompts.": (_PROMPT, 2),  # OpenInference (package), completions API
    "embedding.embeddings.": (_PROMPT, 2),  # OpenInference (package): the embedded text
    "llm.output_messages.": (_COMPLETION, 2),  # OpenInference
    "llm.choices.": (_COMPLETION, 2),  # OpenInference (package), completions API
    "retrieval.documents.": (_UNCOUNTED, 0),  # OpenInference (package)
    "reranker.input_documents.": (_UNCOUNTED, 0),  # OpenInference (package)
    "reranker.output_documents.": (_UNCOUNTED, 0),  # OpenInference (package)
}
_CONTENT_PREFIX_TUPLE = tuple(_CONTENT_PREFIXES)
# In flattened messages, only these leaves are text; role, ids and finish reasons are not.
_TEXT_LEAVES = (".content", ".text", ".arguments")
_JSON_TEXT_KEYS = frozenset({"content", "text", "arguments"})


def content_group(key: str) -> tuple[str, int] | None:
    """(direction, rank) when the attribute carries content, else None."""
    group = _CONTENT_KEYS.get(key)
    if group is None and key.startswith(_CONTENT_PREFIX_TUPLE):
        group = _prefixed_content_group(key)
    return group


def measure_content(content: list[ContentItem], values: dict[str, Any]) -> None:
    """Set prompt_chars, prompt_hash and completion_chars in `values` from the best groups."""
    prompt = _content_text(content, _PROMPT)
    if prompt is not None:
        values["prompt_chars"] = sum(map(len, prompt))
        digest = hashlib.sha256("\n".join(prompt).encode("utf-8", "surrogatepass")).hexdigest()
        values["prompt_hash"] = digest[:16]
    completion = _content_text(content, _COMPLETION)
    if completion is not None:
        values["completion_chars"] = sum(map(len, completion))


def _prefixed_content_group(key: str) -> tuple[str, int] | None:
    for prefix, group in _CONTENT_PREFIXES.items():
        if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isdigit():
            return group
    return None


def _content_text(items: list[ContentItem], direction: str) -> list[str] | None:
    ranks = [rank for _, _, item_direction, rank in items if item_direction == direction]
    if not ranks:
        return None
    best = min(ranks)
    texts: list[str] = []
    for key, value, item_direction, rank in items:
        if item_direction != direction or rank != best:
            continue
        if key in _CONTENT_KEYS or key.endswith(_TEXT_LEAVES):
            _collect_text(value, texts)
    return texts


def _collect_text(value: Any, out: list[str], depth: int = 0) -> None:
    """The human text inside a content value: a plain string, or the text leaves of JSON."""
    if depth > MAX_JSON_DEPTH:
        return
    if type(value) is str:
        if value[:1] in ("[", "{"):
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError:
                out.append(value)
            else:
                _collect_json_text(parsed, out, depth + 1, True)
        else:
            out.append(value)
    elif type(value) is list or type(value) is dict:
        _collect_json_text(value, out, depth + 1, True)


def _collect_json_text(value: Any, out: list[str], depth: int, is_text: bool) -> None:
    # Strings count only under a text key (content, text, arguments) or at the top level,
    # so a request body's model name or stop list is not taken for prompt text.
    if depth > MAX_JSON_DEPTH:
        return
    if type(value) is str:
        if is_text:
            out.append(value)
    elif type(value) is dict:
        for key, inner in value.items():
            _collect_json_text(inner, out, depth + 1, key in _JSON_TEXT_KEYS)
    elif type(value) is list:
        for inner in value:
            _collect_json_text(inner, out, depth + 1, is_text)
