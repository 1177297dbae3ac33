"""instructor (structured outputs through a forced tool call) against dsgw, in its own package
directory: its pins keep it off the openai release the rest of the suite runs (see
requirements-instructor.txt)."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys
import instructor, openai, pydantic

class Weather(pydantic.BaseModel):
    city: str
    celsius: int

client = instructor.from_openai(openai.OpenAI(base_url=sys.argv[1], api_key="sk-alice", max_retries=0))
weather, raw = client.chat.completions.create_with_completion(
    model=sys.argv[2], response_model=Weather, max_retries=0,
    messages=[{"role": "user", "content": "The weather in Hangzhou"}],
)
print(json.dumps({"openai": openai.__version__, "weather": weather.model_dump(),
                  "cost": raw.usage.dsgw_cost["total"]}))
"""


@pytest.mark.parametrize("model", ["deepseek-chat", "deepseek-reasoner"])
def test_instructor_gets_a_validated_object(gateway, model):
    site = os.environ.get("DSGW_INSTRUCTOR_PATH")
    if not site or not os.path.isdir(site):
        raise RuntimeError(f"DSGW_INSTRUCTOR_PATH={site!r}: run the suite with scripts/test, which installs instructor")
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, gateway.url + "/v1", model],
        env=dict(os.environ, PYTHONPATH=site), capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["openai"] == "3.3.0", "instructor ran with the openai it pins"
    assert out["weather"]["city"] == "Hangzhou"
    assert isinstance(out["weather"]["celsius"], int)
    assert float(out["cost"]) > 0
