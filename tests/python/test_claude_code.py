"""Claude Code (the real CLI, pinned in tests/agents) pointed at dsgw's Anthropic surface, as its
docs say to: ANTHROPIC_BASE_URL and a dsgw key. It streams, sends a mid-conversation system
message, adaptive thinking and `max_tokens: 32000`; it must answer, and run a tool the model
calls and send back its result."""

import json
import os
import subprocess
import tempfile

import pytest
from conftest import agent_bin, assert_tool_turn_reached_deepseek, tokens_billed


def claude(gateway, model, prompt, *extra):
    home = tempfile.mkdtemp(prefix="dsgw-claude-")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": home,
        "ANTHROPIC_BASE_URL": gateway.url + "/anthropic",
        "ANTHROPIC_API_KEY": "sk-alice",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    r = subprocess.run(
        [agent_bin("DSGW_CLAUDE_BIN"), "-p", prompt, "--model", model, "--output-format", "json", *extra],
        env=env, cwd=home, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr + gateway.logs()[-4000:]
    return json.loads(r.stdout)


@pytest.mark.parametrize("model", ["deepseek-chat", "deepseek-reasoner"])
def test_claude_code_answers_and_its_usage_is_what_dsgw_billed(gateway, model):
    before = tokens_billed(gateway)
    out = claude(gateway, model, "say hi")
    after = tokens_billed(gateway)
    assert not out["is_error"], out
    assert out["result"].startswith("Hello!")
    usage = out["usage"]
    # Claude Code's input is the uncached part; dsgw reports cache reads apart, as Anthropic does.
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == after["input"] - before["input"]
    assert usage["output_tokens"] == after["output"] - before["output"]


@pytest.mark.parametrize("model", ["deepseek-chat", "deepseek-reasoner"])
def test_claude_code_runs_the_tool_the_model_calls(fake, gateway, model):
    # printf joins the words with a dash: "dsgw-ran" exists only if the shell ran the command.
    out = claude(
        gateway, model, "Use Bash to run: printf '%s-%s' dsgw ran",
        "--allowedTools", "Bash(printf:*)",
    )
    assert not out["is_error"], out
    assert out["num_turns"] == 2, out
    assert out["permission_denials"] == []
    assert "The tool said: dsgw-ran" in out["result"], out
    assert_tool_turn_reached_deepseek(fake, model, "Bash", "dsgw-ran")
