"""Starts the fake DeepSeek upstream and the real dsgw binary for the OpenAI SDK tests.

The binaries come from DSGW_BIN and FAKE_DEEPSEEK_BIN (set by scripts/test), or from the
default cargo target directory.
"""

import hashlib
import json
import os
import pathlib
import subprocess
import tempfile
import threading
import urllib.request

import openai
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
UPSTREAM_KEY = "sk-upstream-secret-python"


def _binary(env_name, default):
    path = pathlib.Path(os.environ.get(env_name, TARGET / default))
    if not path.exists():
        raise RuntimeError(f"{path} is missing: build with `cargo build --workspace --bins`")
    return str(path)


class Process:
    """A child process whose stderr is collected; `url` comes from its 'listening on' line."""

    def __init__(self, args, env, prefix):
        self.proc = subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )
        self.lines = []
        ready = threading.Event()
        self.url = None

        def pump():
            for line in self.proc.stderr:
                self.lines.append(line)
                if self.url is None and line.startswith(prefix):
                    self.url = line[len(prefix):].strip()
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(20) or self.url is None:
            self.proc.kill()
            raise RuntimeError("process did not start:\n" + "".join(self.lines))

    def logs(self):
        return "".join(self.lines)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="session")
def fake():
    env = dict(os.environ, FAKE_DEEPSEEK_KEY=UPSTREAM_KEY)
    p = Process([_binary("FAKE_DEEPSEEK_BIN", "fake-deepseek")], env, "fake-deepseek: listening on ")
    yield p
    p.stop()


@pytest.fixture(scope="session")
def gateway(fake):
    alice = hashlib.sha256(b"sk-alice").hexdigest()
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
idle_timeout_ms = 3000

# LiteLLM's table for `deepseek/deepseek-chat` (pinned in requirements.txt): the client's cost
# must equal the gateway's.
[[prices]]
name = "litellm-deepseek-chat"
cache_hit = "0.028"
cache_miss = "0.28"
output = "0.42"

[[models]]
name = "deepseek-chat"
deployments = [{{ provider = "deepseek", model = "deepseek-chat", price = "litellm-deepseek-chat" }}]

[[models]]
name = "deepseek-reasoner"
thinking = true
deployments = [{{ provider = "deepseek", model = "deepseek-reasoner", price = "litellm-deepseek-chat" }}]

[[models]]
name = "deepseek-v3.2-speciale"
thinking = true
thinking_only = true
tools = false
deployments = [{{ provider = "deepseek", model = "deepseek-reasoner" }}]

[[keys]]
id = "alice"
team = "research"
key_sha256 = "{alice}"

# Tests provoke upstream failures on purpose, one request each: no retries (each failure reaches
# the SDK as it is), and no circuit opening on the one shared deployment.
[routing]
max_attempts = 1
failures_to_open = 1000
error_rate_to_open = 1.0
error_rate_window = 64
"""
    yield from serve(config)


def serve(config):
    """Runs `dsgw serve` with `config` (TOML text) until the fixture using it ends."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config)
    env = dict(os.environ, FAKE_DEEPSEEK_KEY=UPSTREAM_KEY, NO_COLOR="1")
    p = Process([_binary("DSGW_BIN", "dsgw"), "serve", "--config", f.name], env, "dsgw: listening on ")
    try:
        yield p
    finally:
        p.stop()
        os.unlink(f.name)


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-alice", max_retries=0)


@pytest.fixture(scope="session")
def default_gateway():
    """`dsgw serve` exactly as the README runs it: no config file, no API key."""
    env = {k: v for k, v in os.environ.items() if k not in ("DEEPSEEK_API_KEY", "DSGW_CONFIG")}
    env["NO_COLOR"] = "1"
    p = Process([_binary("DSGW_BIN", "dsgw"), "serve", "--listen", "127.0.0.1:0"], env, "dsgw: listening on ")
    yield p
    p.stop()


def agent_bin(env_name):
    """An agent CLI installed by scripts/test (npm ci of tests/agents); a missing one fails the
    test, it is never skipped."""
    path = os.environ.get(env_name)
    if not path or not pathlib.Path(path).exists():
        raise RuntimeError(f"{env_name}={path!r}: run the suite with scripts/test, which installs the agent CLIs")
    return path


def tokens_billed(gateway):
    """The gateway's input and output tokens so far, from its Prometheus metrics."""
    text = urllib.request.urlopen(gateway.url + "/metrics", timeout=5).read().decode()
    totals = {}
    for line in text.splitlines():
        if line.startswith("dsgw_tokens_total{"):
            labels, value = line.rsplit(" ", 1)
            kind = labels.split('kind="', 1)[1].split('"', 1)[0]
            totals[kind] = totals.get(kind, 0) + int(float(value))
    return {
        "input": totals.get("cache_hit", 0) + totals.get("cache_miss", 0),
        "cached": totals.get("cache_hit", 0),
        "output": totals.get("output", 0),
    }


def assert_tool_turn_reached_deepseek(fake, model, tool, output):
    """The agent's second turn, as DeepSeek got it: the model's call to `tool`, the tool message
    with `output`, and (thinking) the reasoning the agent was handed and sent back."""
    sent = json.loads(urllib.request.urlopen(fake.url + "/_fake/state", timeout=5).read())
    messages = json.loads(sent["last_body"])["messages"]
    [call] = [m for m in messages if m.get("tool_calls")]
    assert call["tool_calls"][0]["function"]["name"] == tool
    assert messages[-1]["role"] == "tool" and output in messages[-1]["content"]
    if model == "deepseek-reasoner":
        assert call["reasoning_content"] == "The user greets me. I should answer politely. "
