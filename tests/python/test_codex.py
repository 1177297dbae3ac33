"""OpenAI's Codex CLI (the real binary, pinned in tests/agents) with dsgw as a model provider on
the Responses API (`wire_api = "responses"`, the only one Codex speaks). It sends its whole
history each turn, namespace tools, a web_search tool dsgw drops, and reasoning items it got
back; it must answer, and run the command the model asks for."""

import json
import os
import pathlib
import subprocess
import tempfile

import pytest
from conftest import agent_bin, assert_tool_turn_reached_deepseek, tokens_billed


def codex(gateway, model, prompt):
    home = pathlib.Path(tempfile.mkdtemp(prefix="dsgw-codex-"))
    (home / ".codex").mkdir()
    (home / ".codex" / "config.toml").write_text(f"""
model = "{model}"
model_provider = "dsgw"
model_context_window = 131072

[model_providers.dsgw]
name = "dsgw"
base_url = "{gateway.url}/v1"
env_key = "DSGW_API_KEY"
wire_api = "responses"
""")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "CODEX_HOME": str(home / ".codex"),
        "DSGW_API_KEY": "sk-alice",
    }
    r = subprocess.run(
        [agent_bin("DSGW_CODEX_BIN"), "exec", "--json", "--skip-git-repo-check",
         "--sandbox", "danger-full-access", prompt],
        env=env, cwd=home, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr + gateway.logs()[-4000:]
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    errors = [e for e in events if e["type"] in ("error", "turn.failed")]
    assert not errors, errors
    return events


def items(events, kind):
    return [e["item"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == kind]


@pytest.mark.parametrize("model", ["deepseek-chat", "deepseek-reasoner"])
def test_codex_answers_and_its_usage_is_what_dsgw_billed(gateway, model):
    before = tokens_billed(gateway)
    events = codex(gateway, model, "say hi")
    after = tokens_billed(gateway)
    assert items(events, "agent_message")[-1]["text"].startswith("Hello!")
    usage = [e["usage"] for e in events if e["type"] == "turn.completed"][-1]
    assert usage["input_tokens"] == after["input"] - before["input"]
    assert usage["cached_input_tokens"] == after["cached"] - before["cached"]
    assert usage["output_tokens"] == after["output"] - before["output"]


@pytest.mark.parametrize("model", ["deepseek-chat", "deepseek-reasoner"])
def test_codex_runs_the_command_the_model_calls(fake, gateway, model):
    # printf joins the words with a dash: "dsgw-ran" exists only if the shell ran the command.
    events = codex(gateway, model, "Use exec_command to run: printf '%s-%s' dsgw ran")
    [command] = items(events, "command_execution")
    assert command["exit_code"] == 0 and command["aggregated_output"] == "dsgw-ran", command
    assert "dsgw-ran" in items(events, "agent_message")[-1]["text"]
    assert_tool_turn_reached_deepseek(fake, model, "exec_command", "dsgw-ran")
