"""Cost, budgets and rate limits as an OpenAI SDK user meets them."""

import hashlib
from decimal import Decimal

import openai
import pytest

from conftest import serve

PRICES = {"hit": Decimal("0.028"), "miss": Decimal("0.28"), "out": Decimal("0.42")}


@pytest.fixture(scope="module")
def limited(fake):
    digest = lambda k: hashlib.sha256(k.encode()).hexdigest()
    config = f"""
[server]
listen = "127.0.0.1:0"

[ledger]
path = ""

[[providers]]
name = "deepseek"
kind = "deepseek"
base_url = "{fake.url}"
api_key_env = "FAKE_DEEPSEEK_KEY"

[[models]]
name = "deepseek-chat"
deployments = [{{ provider = "deepseek", model = "deepseek-chat", price = "deepseek-v3.2" }}]

[[keys]]
id = "carol"
team = "finance"
key_sha256 = "{digest('sk-carol')}"

[[keys]]
id = "dave"
team = "ops"
key_sha256 = "{digest('sk-dave')}"

[[limits]]
scope = "key"
name = "carol"
requests_per_minute = 2

[[budgets]]
scope = "key"
name = "dave"
period = "total"
amount = "0.000001"
"""
    yield from serve(config)


def client(gateway, key):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def test_cost_is_exact_in_headers_and_usage(limited):
    raw = client(limited, "sk-carol").chat.completions.with_raw_response.create(
        model="deepseek-chat", messages=[{"role": "user", "content": "What does this cost?"}]
    )
    r = raw.parse()
    u = r.usage.model_extra
    expected = (
        u["prompt_cache_hit_tokens"] * PRICES["hit"]
        + u["prompt_cache_miss_tokens"] * PRICES["miss"]
        + r.usage.completion_tokens * PRICES["out"]
    ) / 1_000_000
    assert Decimal(u["dsgw_cost"]["total"]) == expected
    assert Decimal(raw.headers["x-dsgw-cost"]) == expected
    assert raw.headers["x-ratelimit-limit-requests"] == "2"


def test_rate_limit_is_a_rate_limit_error_with_retry_after(limited):
    c = client(limited, "sk-carol")
    with pytest.raises(openai.RateLimitError) as e:
        for _ in range(3):
            c.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "hi"}])
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert e.value.body["param"] == "requests_per_minute"


def test_an_exhausted_budget_is_a_402_insufficient_balance(limited):
    c = client(limited, "sk-dave")
    c.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 402
    assert e.value.body["message"] == "Insufficient Balance"
