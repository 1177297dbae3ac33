"""The README's run command with no config and no key: the built-in model serves the whole path."""

import openai


def client_for(gateway):
    return openai.OpenAI(base_url=gateway.url, api_key="anything", max_retries=0)


def test_models_are_labelled_as_the_builtin_model(default_gateway):
    models = client_for(default_gateway).models.list()
    assert [m.id for m in models] == ["deepseek-chat", "deepseek-reasoner", "deepseek-v3.2-speciale"]
    assert all("built-in" in m.model_extra["description"] for m in models)


def test_chat_and_stream_work_offline(default_gateway):
    c = client_for(default_gateway)
    r = c.chat.completions.create(
        model="deepseek-reasoner", messages=[{"role": "user", "content": "hello"}], max_tokens=8
    )
    assert r.choices[0].finish_reason == "length"
    assert isinstance(r.choices[0].message.reasoning_content, str)
    assert r.usage.completion_tokens == 8
    assert r.usage.model_extra["prompt_cache_miss_tokens"] == r.usage.prompt_tokens

    chunks = list(c.chat.completions.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "hello"}], max_tokens=4,
        stream=True, stream_options={"include_usage": True},
    ))
    assert chunks[-1].usage.completion_tokens == 4
    assert chunks[-2].choices[0].finish_reason == "length"
