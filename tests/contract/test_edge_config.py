"""Edge config: TOML overridden by EDGE_* variables; an invalid value fails at start naming the field and
where it came from; secrets come from files (systemd's $CREDENTIALS_DIRECTORY first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.settings import ConfigError, read_secret
from edge.config import load_edge_config

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_config_loads_with_working_defaults() -> None:
    cfg = load_edge_config(REPO / "config" / "edge.toml")
    assert cfg.capture.backend == "simulator" and cfg.mqtt.port == 1883 and cfg.interval_s == 3600


def test_environment_overrides_nested_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "edge.toml").write_text('device_id = "from-file"\n[mqtt]\nport = 1883\n')
    monkeypatch.setenv("EDGE_MQTT__PORT", "18830")
    monkeypatch.setenv("EDGE_INTERVAL_S", "0.25")
    cfg = load_edge_config(tmp_path / "edge.toml")
    assert (cfg.device_id, cfg.mqtt.port, cfg.interval_s) == ("from-file", 18830, 0.25)


def test_bad_value_in_the_file_names_field_and_file(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text('interval_s = -1\n[capture]\nbackend = "webcam"\n')
    with pytest.raises(ConfigError) as err:
        load_edge_config(path)
    msg = str(err.value)
    assert "interval_s" in msg and "capture.backend" in msg and str(path) in msg
    assert "EDGE_CAPTURE__BACKEND" in msg  # says how to override it


def test_bad_value_from_the_environment_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "edge.toml").write_text("")
    monkeypatch.setenv("EDGE_MQTT__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"mqtt\.port.*environment variable EDGE_MQTT__PORT"):
        load_edge_config(tmp_path / "edge.toml")


@pytest.mark.parametrize("text", ['colour = "red"\n', '[mqtt]\nprot = 1\n', 'device_id = "a/b"\n'])
def test_typos_and_bad_ids_fail_at_start(tmp_path: Path, text: str) -> None:
    (tmp_path / "edge.toml").write_text(text)
    with pytest.raises(ConfigError):
        load_edge_config(tmp_path / "edge.toml")


def test_missing_config_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_edge_config(tmp_path / "nope.toml")


def test_secrets_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("  s3cret \n")
    assert read_secret(tmp_path / "pw") == "s3cret"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("from-systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_secret("mqtt-password") == "from-systemd"
    assert read_secret(None) is None
    with pytest.raises(ConfigError, match="cannot read secret file"):
        read_secret(tmp_path / "missing")
