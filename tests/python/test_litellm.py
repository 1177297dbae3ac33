"""LiteLLM as a client library against dsgw: `deepseek/` models, and the cost LiteLLM computes
from its own price table equal to the one dsgw reports (`usage.dsgw_cost`)."""

import os
from decimal import Decimal

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm  # noqa: E402
import pytest  # noqa: E402


@pytest.mark.parametrize("model", ["deepseek-chat", "deepseek-reasoner"])
def test_litellm_cost_equals_dsgw_cost(gateway, model):
    # A long shared system prompt, twice: the second call hits the cache, and both costs agree.
    system = "You answer briefly. " * 40
    for _ in range(2):
        r = litellm.completion(
            model=f"deepseek/{model}", api_base=gateway.url + "/v1", api_key="sk-alice",
            messages=[{"role": "system", "content": system}, {"role": "user", "content": "hi"}],
        )
        assert r.choices[0].message.content.startswith("Hello!")
        cost = Decimal(str(litellm.completion_cost(completion_response=r)))
        dsgw = Decimal(r.usage.dsgw_cost["total"])
        assert abs(cost - dsgw) < Decimal("1e-12"), (cost, dsgw, r.usage)
    assert r.usage.prompt_tokens_details.cached_tokens > 0


def test_litellm_streams(gateway):
    chunks = list(litellm.completion(
        model="deepseek/deepseek-chat", api_base=gateway.url + "/v1", api_key="sk-alice",
        messages=[{"role": "user", "content": "hi"}], stream=True,
    ))
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("Hello!")
