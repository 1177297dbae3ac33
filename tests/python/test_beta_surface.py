"""DeepSeek's beta surface through the openai SDK, as DeepSeek's docs use it (base_url .../beta):
fill in the middle, chat prefix completion, strict function calling, and JSON mode."""

import httpx
import openai
import pytest


@pytest.fixture
def beta(gateway):
    return openai.OpenAI(base_url=gateway.url + "/beta", api_key="sk-alice", max_retries=0)


def requests_of(gateway, model):
    r = httpx.get(gateway.url + "/v1/usage", headers={"Authorization": "Bearer sk-alice"})
    return sum(row["requests"] for row in r.json()["data"] if row["model"] == model)


def test_fim_completion(beta, gateway):
    before = requests_of(gateway, "deepseek-chat")
    r = beta.completions.create(
        model="deepseek-chat", prompt="def fib(a):", suffix="    return fib(a-1) + fib(a-2)", max_tokens=128,
    )
    assert r.object == "text_completion"
    assert r.model == "deepseek-chat"
    assert r.choices[0].text == "filled fib(a): to return"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 6 and r.usage.completion_tokens == 4
    assert requests_of(gateway, "deepseek-chat") == before + 1, "FIM is accounted like chat"


def test_fim_streaming_and_echo(beta):
    stream = beta.completions.create(
        model="deepseek-chat", prompt="x = ", suffix="\nprint(x)", stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "filled = to print(x)"
    assert chunks[-1].usage.completion_tokens == 4
    r = beta.completions.create(model="deepseek-chat", prompt="a b", echo=True, max_tokens=8)
    assert r.choices[0].text.startswith("a b")


def test_fim_is_non_thinking_only(beta):
    with pytest.raises(openai.BadRequestError) as e:
        beta.completions.create(model="deepseek-v3.2-speciale", prompt="x", max_tokens=8)
    assert "thinking" in e.value.message
    with pytest.raises(openai.UnprocessableEntityError):
        beta.completions.create(model="deepseek-chat", prompt="x", logprobs=21)


def test_chat_prefix_completion(beta, client):
    messages = [
        {"role": "user", "content": "Write quick sort"},
        {"role": "assistant", "content": "```python\n", "prefix": True},
    ]
    r = beta.chat.completions.create(model="deepseek-chat", messages=messages, stop=["```"])
    assert r.choices[0].message.content == "and so it continues."
    # On the plain endpoint the gateway says where prefix completion lives.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="deepseek-chat", messages=messages)
    assert "/beta/chat/completions" in e.value.message


STRICT_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "strict": True,
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["location", "unit"],
            "additionalProperties": False,
        },
    },
}


def test_strict_function_calling(beta, client, fake):
    r = beta.chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "Weather in Hangzhou?"}], tools=[STRICT_TOOL],
    )
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.choices[0].message.tool_calls[0].function.name == "get_weather"
    loose = {**STRICT_TOOL, "function": {**STRICT_TOOL["function"], "parameters": {
        "type": "object", "properties": {"location": {"type": "string", "minLength": 2}},
        "required": ["location"], "additionalProperties": False,
    }}}
    with pytest.raises(openai.BadRequestError) as e:
        beta.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "x"}], tools=[loose])
    assert "properties.location: `minLength` is not supported in strict mode" in e.value.message
    # On /v1 strict is accepted as DeepSeek's plain endpoint accepts it, and honoured: a schema in
    # the strict subset goes through DeepSeek's strict path.
    raw = client.chat.completions.with_raw_response.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "Weather in Hangzhou?"}], tools=[STRICT_TOOL],
    )
    assert raw.parse().choices[0].message.tool_calls[0].function.name == "get_weather"
    assert "x-dsgw-strict" not in raw.headers
    state = httpx.get(fake.url + "/_fake/state").json()
    assert state["last_beta"] is True
    assert '"strict":true' in state["last_body"]
    # One outside the subset is forwarded without the flag, and the client is told.
    raw = client.chat.completions.with_raw_response.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "Weather in Hangzhou?"}], tools=[loose],
    )
    assert raw.parse().choices[0].finish_reason == "tool_calls"
    assert raw.headers["x-dsgw-strict"].startswith("dropped: tools[0] (get_weather)")
    state = httpx.get(fake.url + "/_fake/state").json()
    assert state["last_beta"] is False
    assert '"strict"' not in state["last_body"]


def test_json_mode_is_passed_through(client, fake):
    r = client.chat.completions.create(
        model="deepseek-chat", response_format={"type": "json_object"},
        messages=[{"role": "system", "content": "Answer in json."}, {"role": "user", "content": "hi"}],
    )
    assert r.choices[0].message.content
    sent = httpx.get(fake.url + "/_fake/state").json()["last_body"]
    assert '"response_format":{"type":"json_object"}' in sent
