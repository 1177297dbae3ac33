"""The real openai SDK pointed at dsgw, exactly as DeepSeek's documentation tells users to do."""

import json
import time

import openai
import pytest

from conftest import UPSTREAM_KEY

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}]


def usage_is_complete(usage):
    extra = usage.model_extra
    assert extra["prompt_cache_hit_tokens"] + extra["prompt_cache_miss_tokens"] == usage.prompt_tokens
    assert usage.prompt_tokens_details.cached_tokens == extra["prompt_cache_hit_tokens"]
    assert usage.completion_tokens_details.reasoning_tokens is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["deepseek-chat", "deepseek-reasoner", "deepseek-v3.2-speciale"]


def test_chat_non_streaming(client):
    r = client.chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "Hello"}]
    )
    assert r.object == "chat.completion"
    assert r.model == "deepseek-chat"
    assert r.choices[0].message.content == "Hello! How can I help you today?"
    assert r.choices[0].finish_reason == "stop"
    usage_is_complete(r.usage)


def test_base_url_without_v1_works(gateway):
    c = openai.OpenAI(base_url=gateway.url, api_key="sk-alice", max_retries=0)
    r = c.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content


def test_reasoner_non_streaming_keeps_reasoning_content(client):
    r = client.chat.completions.create(
        model="deepseek-reasoner", messages=[{"role": "user", "content": "Hello"}]
    )
    message = r.choices[0].message
    assert message.reasoning_content == "The user greets me. I should answer politely."
    assert r.usage.completion_tokens_details.reasoning_tokens == 8
    usage_is_complete(r.usage)


def test_thinking_toggle_through_extra_body(client):
    r = client.chat.completions.create(
        model="deepseek-chat",
        messages=[{"role": "user", "content": "Hello"}],
        extra_body={"thinking": {"type": "enabled"}},
    )
    assert r.choices[0].message.reasoning_content


@pytest.mark.parametrize("model", ["deepseek-chat", "deepseek-reasoner"])
def test_streaming_with_usage(client, model):
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    reasoning, content, usage = "", "", None
    for chunk in stream:
        assert chunk.model == model
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning_content", None) or ""
        content += delta.content or ""
    assert content.strip() == "Hello! How can I help you today?"
    assert bool(reasoning) == (model == "deepseek-reasoner")
    assert usage is not None
    usage_is_complete(usage)


def test_streaming_without_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "Hello"}], stream=True
    ))
    assert chunks and all(c.usage is None and c.choices for c in chunks)


def test_tool_loop_in_thinking_mode(client):
    messages = [{"role": "user", "content": "Weather in Hangzhou?"}]
    first = client.chat.completions.create(model="deepseek-reasoner", messages=messages, tools=TOOLS)
    assert first.choices[0].finish_reason == "tool_calls"
    message = first.choices[0].message
    call = message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Hangzhou"}
    # DeepSeek's documented loop: append the assistant message as returned, reasoning included.
    messages.append(message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "24C, sunny"})
    second = client.chat.completions.create(model="deepseek-reasoner", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "The tool said: 24C, sunny"


def test_speciale_refuses_tools(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="deepseek-v3.2-speciale", messages=[{"role": "user", "content": "hi"}], tools=TOOLS
        )
    assert "does not support tools" in e.value.body["message"]


def test_errors_map_to_sdk_exceptions(client, gateway):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "deepseek-chat" in e.value.body["message"]
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(
            model="deepseek-chat", messages=[{"role": "user", "content": "hi"}], temperature=5
        )
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="deepseek-reasoner", messages=[{"role": "user", "content": "hi"}], logprobs=True
        )
    bad = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="deepseek-chat", messages=[{"role": "user", "content": "__status_429__"}]
        )
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(
            model="deepseek-chat", messages=[{"role": "user", "content": "__status_503__"}]
        )
    assert e.value.status_code == 502


def test_stream_cut_raises_instead_of_ending_cleanly(client):
    stream = client.chat.completions.create(
        model="deepseek-reasoner", messages=[{"role": "user", "content": "__cut__"}], stream=True
    )
    with pytest.raises(openai.APIError) as e:
        for _ in stream:
            pass
    assert "stream interrupted" in str(e.value)


def test_no_secret_in_logs(client, gateway):
    client.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "hi"}])
    deadline = time.time() + 5
    while "dsgw::completion" not in gateway.logs() and time.time() < deadline:
        time.sleep(0.01)
    logs = gateway.logs()
    assert "dsgw::completion" in logs
    assert UPSTREAM_KEY not in logs and "sk-alice" not in logs
