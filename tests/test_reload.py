"""Hot reload: editing the config of a running server changes what it does within seconds,
without dropping connections; a broken edit leaves the running settings in force."""

from __future__ import annotations

import json
import logging
import os
import threading

import httpx
import yaml

from ampbridge.standalone import create_app

from .servers import ServerThread, eventually, model_backend


def write_config(path, config: dict, *, atomic: bool = False) -> None:
    text = yaml.safe_dump(config)
    if atomic:  # what editors do: write a new file, rename it over the old one
        temporary = path.with_name(path.name + ".swp")
        temporary.write_text(text)
        os.replace(temporary, path)
    else:
        path.write_text(text)


def base_config(upstream, backends) -> dict:
    return {
        "amp-upstream-url": upstream.url,
        "providers": [
            {
                "name": "claude",
                "type": "anthropic",
                "base-url": backends["anthropic"].url,
                "models": ["claude-opus-4-7"],
            }
        ],
    }


def served_by(url: str, model: str, **headers) -> str | int:
    response = httpx.post(f"{url}/api/provider/anthropic/v1/messages", json={"model": model}, headers=headers)
    return response.headers.get("x-served-by", response.status_code)


def test_a_new_mapping_takes_effect_and_a_broken_edit_keeps_the_old_settings(
    tmp_path, upstream, backends, caplog
):
    config_path = tmp_path / "config.yaml"
    config = base_config(upstream, backends)
    write_config(config_path, config)
    with ServerThread(create_app(config_path, environ={}, configure_logs=False)) as server:
        assert served_by(server.url, "claude-opus-9") == "amp-upstream"

        config["amp-model-mappings"] = [{"from": "claude-opus-9", "to": "claude-opus-4-7"}]
        write_config(config_path, config)
        assert eventually(lambda: served_by(server.url, "claude-opus-9") == "anthropic-backend")
        assert backends["anthropic"].requests[-1].json()["model"] == "claude-opus-4-7"

        with caplog.at_level(logging.ERROR, logger="ampbridge"):
            config_path.write_text(config_path.read_text() + "amp-force-model-mappings: [not, a, bool]\n")
            assert eventually(lambda: "previous settings stay in force" in caplog.text)
        assert "amp-force-model-mappings" in caplog.text
        assert served_by(server.url, "claude-opus-9") == "anthropic-backend"  # still the old, valid settings

        config["amp-model-mappings"] = []
        write_config(config_path, config, atomic=True)
        assert eventually(lambda: served_by(server.url, "claude-opus-9") == "amp-upstream")


def test_keys_and_gate_reload_by_atomic_rename(tmp_path, upstream, backends):
    config_path = tmp_path / "config.yaml"
    config = base_config(upstream, backends)
    write_config(config_path, config)
    with ServerThread(create_app(config_path, environ={}, configure_logs=False)) as server:
        assert httpx.get(f"{server.url}/api/user").status_code == 200
        write_config(config_path, {**config, "api-keys": ["new-client-key"]}, atomic=True)
        assert eventually(lambda: httpx.get(f"{server.url}/api/user").status_code == 401)
        assert httpx.get(f"{server.url}/api/user", headers={"X-Api-Key": "new-client-key"}).status_code == 200
        write_config(config_path, {**config, "amp-upstream-url": ""}, atomic=True)
        assert eventually(lambda: httpx.get(f"{server.url}/api/user").status_code == 503)


def test_a_stream_in_flight_survives_a_reload(tmp_path, upstream):
    gate = threading.Event()
    backend = model_backend("gated", ["claude-opus-4-7"], gate=gate)
    with ServerThread(backend) as backend_thread:
        config_path = tmp_path / "config.yaml"
        config = {
            "amp-upstream-url": upstream.url,
            "providers": [
                {
                    "name": "gated",
                    "type": "anthropic",
                    "base-url": backend_thread.url,
                    "models": ["claude-opus-4-7"],
                }
            ],
        }
        write_config(config_path, config)
        with (
            ServerThread(create_app(config_path, environ={}, configure_logs=False)) as server,
            httpx.stream(
                "POST",
                f"{server.url}/api/provider/anthropic/v1/messages",
                json={"model": "claude-opus-4-7", "stream": True},
            ) as response,
        ):
            lines = response.iter_lines()
            assert next(lines) == "event: message_start"
            write_config(config_path, {**config, "api-keys": ["k"]})
            assert eventually(lambda: httpx.get(f"{server.url}/v1/models").status_code == 401)
            gate.set()
            events = [json.loads(line[5:])["type"] for line in lines if line.startswith("data:")]
    assert events[-1] == "message_stop"


def test_a_reload_logs_each_change_once_and_never_a_key(tmp_path, upstream, backends, caplog):
    config_path = tmp_path / "config.yaml"
    config = {**base_config(upstream, backends), "amp-upstream-api-key": "sk-old-secret-1"}
    config["amp-model-mappings"] = [{"from": "a", "to": "claude-opus-4-7"}]
    write_config(config_path, config)
    caplog.set_level(logging.INFO, logger="ampbridge")
    with ServerThread(create_app(config_path, environ={}, configure_logs=False)) as server:
        assert served_by(server.url, "claude-opus-4-7") == "anthropic-backend"
        changed = {
            **config,
            "amp-upstream-url": upstream.url + "/v2",
            "amp-upstream-api-key": "sk-new-secret-2",
            "amp-model-mappings": [*config["amp-model-mappings"], {"from": "b", "to": "claude-opus-4-7"}],
        }
        write_config(config_path, changed)
        assert eventually(lambda: any("configuration reloaded" in r.getMessage() for r in caplog.records))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("configuration changed: ")]
    assert lines == [
        f"configuration changed: amp-upstream-url: {upstream.url} -> {upstream.url}/v2",
        "configuration changed: amp-upstream-api-key: updated",
        "configuration changed: amp-model-mappings: 1 -> 2",
    ]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "sk-old-secret-1" not in text and "sk-new-secret-2" not in text
