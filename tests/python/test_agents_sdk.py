"""The OpenAI Agents SDK (openai-agents) against dsgw: an agent with a function tool at its
default settings (`strict: true`), on both stable models, through Chat Completions and the
Responses API, streamed and not. The fake upstream calls the tool the prompt names with
arguments from its schema; the turn ends with what the tool returned."""

import asyncio

import pytest
from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

set_tracing_disabled(True)


@function_tool
def get_weather(city: str) -> str:
    """The weather of a city."""
    return f"Sunny and 24C in {city}"


def _model(gateway, api, name):
    client = AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-alice", max_retries=0)
    if api == "chat":
        return OpenAIChatCompletionsModel(model=name, openai_client=client)
    return OpenAIResponsesModel(model=name, openai_client=client)


async def _run(agent, prompt, stream):
    if not stream:
        return await Runner.run(agent, prompt)
    result = Runner.run_streamed(agent, prompt)
    async for _ in result.stream_events():
        pass
    return result


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("name", ["deepseek-chat", "deepseek-reasoner"])
@pytest.mark.parametrize("stream", [False, True])
def test_an_agent_calls_its_tool_and_answers_with_the_result(gateway, api, name, stream):
    agent = Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        model=_model(gateway, api, name),
        tools=[get_weather],
    )
    assert get_weather.strict_json_schema, "the SDK's default: strict function schemas"
    result = asyncio.run(_run(agent, "Weather in Hangzhou?", stream))
    calls = [i for i in result.new_items if i.type == "tool_call_item"]
    outputs = [i for i in result.new_items if i.type == "tool_call_output_item"]
    assert len(calls) == 1 and len(outputs) == 1
    assert outputs[0].output == "Sunny and 24C in Hangzhou"
    assert "Sunny and 24C in Hangzhou" in result.final_output
