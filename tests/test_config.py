"""Settings: YAML + environment with the seed's variable names; errors name the key and the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from ops_agent.config import ENVIRONMENT, load_settings
from ops_agent.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "config.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_need_no_file_and_no_environment():
    settings = load_settings(environ={})
    assert settings.governance.agent_name == "ops_agent"
    assert settings.services == []
    assert settings.llm.api_key is None
    assert settings.mcp.host == "127.0.0.1"


def test_example_config_is_valid_and_documents_every_key():
    settings = load_settings(EXAMPLE, environ={})
    text = EXAMPLE.read_text()

    def keys(model, prefix=""):
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            yield prefix + name
            if isinstance(value, BaseModel):
                yield from keys(value, prefix + name + ".")

    for key in keys(settings):
        assert f"{key.rsplit('.', 1)[-1]}:" in text, f"config.example.yaml does not document {key}"


def test_seed_environment_variable_names_are_read():
    environ = {
        "VERCEL_TOKEN": "vt-123456",
        "VERCEL_TEAM_ID": "team_1",
        "REDIS_URL": "redis://:pw@localhost:6379/0",
        "SUPABASE_URL": "https://x.supabase.co",
        "SUPABASE_SERVICE_ROLE_KEY": "eyJhbGc-service",
        "Mailtrap_API_TOKEN": "mt-123456",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
        "ANTHROPIC_API_KEY": "sk-ant-test-123456",
    }
    settings = load_settings(environ=environ)
    assert settings.vercel.token.get_secret_value() == "vt-123456"
    assert settings.vercel.team_id == "team_1"
    assert settings.redis.url.get_secret_value() == environ["REDIS_URL"]
    assert settings.supabase.url == environ["SUPABASE_URL"]
    assert settings.supabase.service_role_key.get_secret_value() == environ["SUPABASE_SERVICE_ROLE_KEY"]
    assert settings.notify.mailtrap_token.get_secret_value() == environ["Mailtrap_API_TOKEN"]
    assert settings.notify.slack_webhook_url.get_secret_value() == environ["SLACK_WEBHOOK_URL"]
    assert settings.llm.api_key.get_secret_value() == environ["ANTHROPIC_API_KEY"]
    assert set(environ) <= set(ENVIRONMENT)
    # secrets never show in the repr of the settings
    shown = repr(settings)
    for name in ("VERCEL_TOKEN", "Mailtrap_API_TOKEN", "ANTHROPIC_API_KEY", "SUPABASE_SERVICE_ROLE_KEY"):
        assert environ[name] not in shown
    assert set(settings.secret_values()) >= {environ["VERCEL_TOKEN"], environ["ANTHROPIC_API_KEY"]}


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, "vercel:\n  team_id: from-file\nlog_level: DEBUG\n")
    settings = load_settings(path, environ={"VERCEL_TEAM_ID": "from-env"})
    assert settings.vercel.team_id == "from-env"
    assert settings.log_level == "DEBUG"


def test_config_path_from_environment(tmp_path):
    path = write(tmp_path, "governance:\n  agent_name: ops-night\n")
    assert load_settings(environ={"OPS_AGENT_CONFIG": str(path)}).governance.agent_name == "ops-night"


def test_references_to_environment_variables(tmp_path):
    path = write(tmp_path, "mcp:\n  tokens:\n    dev_agent: ${DEV_TOKEN}\n")
    settings = load_settings(path, environ={"DEV_TOKEN": "tok-abcdef"})
    assert settings.mcp.tokens["dev_agent"].get_secret_value() == "tok-abcdef"
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert "mcp.tokens.dev_agent" in caught.value.public_message
    assert "line 3" in caught.value.public_message
    assert "DEV_TOKEN is not set" in caught.value.public_message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("governance:\n  probation_tasks: many\n", ["governance.probation_tasks", "line 2", "integer"]),
        ("governance:\n  probaton_tasks: 3\n", ["governance.probaton_tasks", "line 2", "unknown key"]),
        (
            "services:\n  - name: api\n    url: http://127.0.0.1:1/\n  - name: web\n    url: ftp://x\n",
            ["services.1.url", "line 5", "http"],
        ),
        ("governance:\n  policy:\n    deploy:production: root\n", ["governance.policy.deploy:production", "line 3"]),
        ("log_level: LOUD\n", ["log_level", "line 1"]),
    ],
)
def test_bad_values_name_the_key_and_the_line(tmp_path, text, expected):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), environ={})
    for fragment in expected:
        assert fragment in caught.value.public_message


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "governance:\n  agent_name: [unclosed\nlog_level: INFO\n"), environ={})
    assert "line" in caught.value.public_message


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="line 1: the top level must be a mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"), environ={})


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"OPS_AGENT_LOG_LEVEL": "CHATTY"})
    assert "environment variable OPS_AGENT_LOG_LEVEL" in caught.value.public_message


def test_duplicate_service_names_are_refused(tmp_path):
    text = "services:\n  - {name: api, url: 'http://a/'}\n  - {name: api, url: 'http://b/'}\n"
    with pytest.raises(ConfigError, match="duplicate service names: api"):
        load_settings(write(tmp_path, text), environ={})
