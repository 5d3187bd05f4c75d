"""The test server answers as OpenAI (and Anthropic) do, as seen by the real openai client."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.openai_server import COMPLETION_TEXT, SYSTEM_FINGERPRINT, ChatUsage, OpenAITestServer

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def _client(server: OpenAITestServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)


def test_plain_completion_has_usage_with_cached_and_reasoning_tokens(openai_server: OpenAITestServer) -> None:
    reply = _client(openai_server).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.model == "gpt-4o-mini-2024-07-18"
    assert (reply.system_fingerprint, reply.service_tier) == (SYSTEM_FINGERPRINT, "default")
    assert reply.choices[0].message.content == COMPLETION_TEXT
    assert reply.choices[0].finish_reason == "stop"
    usage = reply.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1200, 300, 1500)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 1000
    assert usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 100
    (request,) = openai_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test"
    assert request.body["messages"] == MESSAGES


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_carries_usage_only_in_a_last_chunk_when_asked(
    openai_server: OpenAITestServer, include_usage: bool
) -> None:
    openai_server.chat_usage = ChatUsage(prompt_tokens=50, cached_tokens=0, completion_tokens=7, reasoning_tokens=0)
    chunks = list(
        _client(openai_server).chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True} if include_usage else openai.omit,
        )
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == COMPLETION_TEXT
    with_usage = [chunk for chunk in chunks if chunk.usage is not None]
    if include_usage:
        assert with_usage == [chunks[-1]]
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (50, 7)
    else:
        assert with_usage == []
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert {chunk.model for chunk in chunks} == {"gpt-4o-mini-2024-07-18"}


@pytest.mark.parametrize(("status", "error"), [(429, openai.RateLimitError), (500, openai.InternalServerError)])
def test_injected_failure_answers_once_with_retry_after(
    openai_server: OpenAITestServer, status: int, error: type[openai.APIStatusError]
) -> None:
    openai_server.fail_next(status, retry_after=3)
    client = _client(openai_server)
    with pytest.raises(error) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raised.value.response.headers["retry-after"] == "3"
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).usage is not None
    assert len(openai_server.requests) == 2


def test_sdk_retries_an_injected_failure(openai_server: OpenAITestServer) -> None:
    openai_server.fail_next(500, retry_after=0)
    client = openai.OpenAI(base_url=openai_server.base_url, api_key="test", max_retries=1)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).usage is not None
    assert [request.headers.get("x-stainless-retry-count") for request in openai_server.requests] == ["0", "1"]


def test_anthropic_messages_plain_and_streamed(openai_server: OpenAITestServer) -> None:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": MESSAGES}
    url = f"{openai_server.root_url}/v1/messages"
    reply = httpx.post(url, json=body).json()
    assert reply["model"] == "claude-sonnet-4-5-20250929"
    assert reply["usage"]["input_tokens"] == 200
    assert reply["usage"]["cache_read_input_tokens"] == 1000
    assert reply["usage"]["cache_creation_input_tokens"] == 50
    assert reply["content"][0]["text"] == COMPLETION_TEXT

    with httpx.stream("POST", url, json=body | {"stream": True}) as response:
        lines = [line for line in response.iter_lines() if line]
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    payloads = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert [payload["type"] for payload in payloads] == events
    text = "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
    assert text == COMPLETION_TEXT
    assert payloads[-2]["usage"]["output_tokens"] == 300
