"""LangChain against dsgw: its DeepSeek integration (langchain-deepseek: invoke, stream, the
reasoner's `reasoning_content`) and its OpenAI one (langchain-openai, which teams point at any
OpenAI-compatible endpoint), each through a tool round trip."""

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_deepseek import ChatDeepSeek
from langchain_openai import ChatOpenAI


def _llm(gateway, model):
    return ChatDeepSeek(
        model=model, api_key="sk-alice", api_base=gateway.url + "/v1", max_retries=0,
    )


@tool
def get_weather(city: str) -> str:
    """The weather of a city."""
    return f"Sunny in {city}"


def test_invoke_and_stream_carry_the_reasoning(gateway):
    llm = _llm(gateway, "deepseek-reasoner")
    r = llm.invoke("hi")
    assert r.content.startswith("Hello!")
    assert r.additional_kwargs["reasoning_content"].startswith("The user greets me.")
    assert r.usage_metadata["input_tokens"] > 0
    chunks = list(llm.stream("hi"))
    text = "".join(c.content for c in chunks)
    reasoning = "".join(c.additional_kwargs.get("reasoning_content", "") for c in chunks)
    assert text.startswith("Hello!")
    assert reasoning.startswith("The user greets me.")


def _openai_llm(gateway, model):
    return ChatOpenAI(
        model=model, api_key="sk-alice", base_url=gateway.url + "/v1", max_retries=0,
    )


@pytest.mark.parametrize("integration", [_llm, _openai_llm])
def test_a_tool_round_trip(gateway, integration):
    llm = integration(gateway, "deepseek-chat").bind_tools([get_weather])
    question = HumanMessage("Weather in Hangzhou?")
    first = llm.invoke([question])
    call = first.tool_calls[0]
    assert call["name"] == "get_weather" and call["args"] == {"city": "Hangzhou"}
    result = get_weather.invoke(call["args"])
    final = llm.invoke([question, first, ToolMessage(result, tool_call_id=call["id"])])
    assert "Sunny in Hangzhou" in final.content
