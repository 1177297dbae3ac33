"""The real anthropic SDK pointed at dsgw's /anthropic, as Claude Code is (ANTHROPIC_BASE_URL)."""

import anthropic
import httpx
import pytest

TOOLS = [{
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}]


@pytest.fixture
def claude(gateway):
    return anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="sk-alice", max_retries=0)


def usage_rows(gateway):
    r = httpx.get(gateway.url + "/v1/usage", headers={"Authorization": "Bearer sk-alice"})
    assert r.status_code == 200
    return {(row["model"], row["date"]): row for row in r.json()["data"]}


def totals(gateway, model):
    rows = [row for (m, _), row in usage_rows(gateway).items() if m == model]
    return (
        sum(r["requests"] for r in rows),
        sum(r["prompt_cache_hit_tokens"] + r["prompt_cache_miss_tokens"] for r in rows),
        sum(r["completion_tokens"] for r in rows),
    )


def test_plain_message_and_its_usage_lands_in_the_ledger(claude, gateway):
    before = totals(gateway, "deepseek-chat")
    m = claude.messages.create(
        model="claude-sonnet-5", max_tokens=256, system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert m.type == "message" and m.role == "assistant"
    assert m.model == "claude-sonnet-5", "the client's model name is echoed"
    assert [b.type for b in m.content] == ["text"]
    assert m.content[0].text == "Hello! How can I help you today?"
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens > 0
    after = totals(gateway, "deepseek-chat")
    assert after[0] == before[0] + 1, "one accounting record, under the model that served it"
    assert after[1] - before[1] == m.usage.input_tokens + m.usage.cache_read_input_tokens
    assert after[2] - before[2] == m.usage.output_tokens


def test_streaming_text(claude, gateway):
    before = totals(gateway, "deepseek-chat")
    with claude.messages.stream(
        model="deepseek-chat", max_tokens=256, messages=[{"role": "user", "content": "Hello"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello! How can I help you today? "
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0
    after = totals(gateway, "deepseek-chat")
    assert after[0] == before[0] + 1
    assert after[2] - before[2] == final.usage.output_tokens


def test_thinking_blocks_whole_and_streamed(claude):
    m = claude.messages.create(
        model="deepseek-chat", max_tokens=1024, thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert [b.type for b in m.content] == ["thinking", "text"]
    assert m.content[0].thinking.startswith("The user greets me.")
    with claude.messages.stream(
        model="deepseek-reasoner", max_tokens=1024, messages=[{"role": "user", "content": "Hello"}],
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert "greets" in final.content[0].thinking


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_loop_in_thinking_mode(claude, stream):
    ask = dict(
        model="deepseek-reasoner", max_tokens=1024, tools=TOOLS,
        messages=[{"role": "user", "content": "Weather in Hangzhou?"}],
    )
    if stream:
        with claude.messages.stream(**ask) as s:
            first = s.get_final_message()
    else:
        first = claude.messages.create(**ask)
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather"
    assert call.input == {"location": "Hangzhou"}
    # Send the whole assistant turn back (thinking included, as Claude Code does) with the result:
    # V3.2 needs the reasoning on the assistant message of a tool loop, or it answers 400.
    ask["messages"] += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 24C"}]},
    ]
    second = claude.messages.create(**ask)
    assert second.stop_reason == "end_turn"
    assert "Sunny" in second.content[-1].text


def test_tool_choice_and_stop_sequences_are_accepted(claude):
    m = claude.messages.create(
        model="deepseek-chat", max_tokens=64, tools=TOOLS,
        tool_choice={"type": "tool", "name": "get_weather"}, stop_sequences=["END"],
        extra_body={"temperature": 0.2, "top_p": 0.9}, messages=[{"role": "user", "content": "Weather?"}],
    )
    assert m.content[0].type == "tool_use"


def test_errors_in_anthropics_shape(gateway):
    bad = anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model="deepseek-chat", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "authentication_error"
    r = httpx.post(
        gateway.url + "/anthropic/v1/messages",
        headers={"x-api-key": "sk-alice", "anthropic-version": "2023-06-01"},
        json={"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 400
    assert r.json()["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
    claude = anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key="sk-alice", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(
            model="deepseek-chat", max_tokens=8,
            messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}],
        )
    assert "image" in e.value.body["error"]["message"]


def test_count_tokens(claude):
    short = claude.messages.count_tokens(model="claude-sonnet-5", messages=[{"role": "user", "content": "Hello"}])
    long = claude.messages.count_tokens(
        model="claude-sonnet-5", system="Be brief. " * 50, messages=[{"role": "user", "content": "Hello"}],
    )
    assert short.input_tokens > 0
    assert long.input_tokens > short.input_tokens + 50
