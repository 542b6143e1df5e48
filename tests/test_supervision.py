"""Issue 10's two killers and their relatives: a reload edit with a key that cannot be sent, and a
backend whose model list is deeply nested JSON, leave the server serving with the settings it
had; later good edits and fixed lists are picked up. Keys that cannot be sent are refused where
they are read: the config file, the environment, Amp's secrets file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import anyio
import httpx
import platformdirs
import pytest

import ampbridge
import ampbridge.runtime
from ampbridge.settings import ConfigError, Settings
from ampbridge.standalone import create_app

from .conftest import ANTHROPIC_KEY, ANTHROPIC_MODELS, GOOGLE_KEY
from .servers import Recorded, RecordingServer, ServerThread, eventually, respond
from .test_library_use import drive_lifespan

BAD_KEY = "sk-\u2019abc"  # a right single quote: not Latin-1, cannot go in a header


def config_text(
    backends: dict[str, RecordingServer],
    upstream: RecordingServer,
    *,
    anthropic_key: str = ANTHROPIC_KEY,
    mappings: list[dict[str, str]] | None = None,
) -> str:
    config: dict[str, Any] = {
        "amp-upstream-url": upstream.url,
        "providers": [
            {
                "name": "claude",
                "type": "anthropic",
                "base-url": backends["anthropic"].url,
                "api-key": anthropic_key,
                "models": ANTHROPIC_MODELS,
            },
            {"name": "gemini", "type": "google", "base-url": backends["google"].url, "api-key": GOOGLE_KEY},
        ],
    }
    if mappings:
        config["amp-model-mappings"] = mappings
    return json.dumps(config, ensure_ascii=False)


def claude_call(url: str, model: str = "claude-opus-4-7") -> httpx.Response:
    return httpx.post(
        f"{url}/api/provider/anthropic/v1/messages", json={"model": model, "max_tokens": 5, "messages": []}
    )


def gemini_call(url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/api/provider/google/v1beta/models/gemini-2.5-pro:generateContent",
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    )


def reload_results(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    results = {}
    for line in text.splitlines():
        if line.startswith("ampbridge_config_reloads_total{"):
            labels, value = line.rsplit(" ", 1)
            results[labels.split('"')[1]] = float(value)
    return results


def test_a_reload_with_a_key_that_cannot_be_sent_is_not_applied_and_a_later_edit_is(
    backends, upstream, tmp_path: Path, caplog
):
    caplog.set_level(logging.INFO)
    config = tmp_path / "config.yaml"
    config.write_text(config_text(backends, upstream))
    app = create_app(config, environ={}, configure_logs=False)
    with ServerThread(app) as server:
        assert claude_call(server.url).status_code == 200

        config.write_text(config_text(backends, upstream, anthropic_key=BAD_KEY), encoding="utf-8")
        assert eventually(lambda: reload_results(server.url).get("failed") == 1, timeout=10)
        not_applied = [r.getMessage() for r in caplog.records if "not applied" in r.getMessage()]
        assert len(not_applied) == 1
        assert "api-key" in not_applied[0] and "providers[0]" in not_applied[0]  # names the key
        assert BAD_KEY not in caplog.text and "\u2019abc" not in caplog.text

        reply = claude_call(server.url)  # the old settings stay: the old key is sent
        assert reply.status_code == 200
        assert backends["anthropic"].requests[-1].header("x-api-key") == ANTHROPIC_KEY
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{server.url}/api/user").status_code == 200

        mappings = [{"from": "house-claude", "to": "claude-haiku-4-5-20251001"}]
        config.write_text(config_text(backends, upstream, mappings=mappings))
        assert eventually(lambda: reload_results(server.url).get("ok") == 1, timeout=10)
        mapped = claude_call(server.url, "house-claude")
        assert mapped.status_code == 200 and mapped.headers["x-served-by"] == "anthropic-backend"
        assert backends["anthropic"].requests[-1].json()["model"] == "claude-haiku-4-5-20251001"
    assert len([r for r in caplog.records if "not applied" in r.getMessage()]) == 1


def nested_listing(
    backends: dict[str, RecordingServer], monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, bytes], list[str]]:
    """Gemini's backend answers its model list with ``[[[[...`` 100k deep until told otherwise;
    discovery retries every 0.1 s instead of 30 s."""
    monkeypatch.setattr(ampbridge.runtime, "DISCOVERY_RETRY_SECONDS", 0.1)
    listing = {"body": b"[" * 100_000 + b"]" * 100_000}
    listed: list[str] = []

    async def gemini_list(scope: Any, receive: Any, send: Any, rec: Recorded) -> None:
        listed.append(rec.path)
        await respond(send, 200, listing["body"])

    backends["google"].route(lambda method, path: method == "GET" and path.endswith("/models"), gemini_list)
    return listing, listed


def test_a_deeply_nested_model_list_does_not_end_the_server(backends, upstream, tmp_path: Path, monkeypatch):
    listing, listed = nested_listing(backends, monkeypatch)
    config = tmp_path / "config.yaml"
    config.write_text(config_text(backends, upstream))
    app = create_app(config, environ={}, configure_logs=False)
    with ServerThread(app) as server:
        assert eventually(lambda: len(listed) >= 4, timeout=10)  # retried, over and over
        assert claude_call(server.url).status_code == 200
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.get(f"{server.url}/api/user").status_code == 200
        before = gemini_call(server.url)  # its models are not known yet: Amp serves the call
        assert before.status_code == 200 and before.headers["x-served-by"] == "amp-upstream"
        assert httpx.get(f"{server.url}/readyz").json()["backends"]["gemini"]["ok"] is False

        listing["body"] = json.dumps({"models": [{"name": "models/gemini-2.5-pro"}]}).encode()
        assert eventually(
            lambda: gemini_call(server.url).headers.get("x-served-by") == "google-backend", timeout=10
        )
        assert claude_call(server.url).status_code == 200
        assert httpx.get(f"{server.url}/readyz").json()["backends"]["gemini"]["ok"] is True


def test_a_failing_model_list_is_logged_once(backends, upstream, tmp_path: Path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    listing, listed = nested_listing(backends, monkeypatch)
    config = tmp_path / "config.yaml"
    config.write_text(config_text(backends, upstream))
    with ServerThread(create_app(config, environ={}, configure_logs=False)):
        assert eventually(lambda: len(listed) >= 5, timeout=10)
    lines = [
        r.getMessage() for r in caplog.records if "gemini" in r.getMessage() and r.levelno >= logging.WARNING
    ]
    assert len(lines) == 1, lines


def test_discovery_retries_after_30_seconds_when_the_first_listing_fails():
    assert ampbridge.runtime.DISCOVERY_RETRY_SECONDS == 30.0
    assert ampbridge.runtime.DISCOVERY_REFRESH_SECONDS == 300.0


def test_a_key_in_the_environment_that_cannot_be_sent_stops_the_start_naming_it(
    backends, upstream, tmp_path, caplog
):
    config = tmp_path / "config.yaml"
    config.write_text(config_text(backends, upstream))
    app = create_app(config, environ={"AMP_API_KEY": BAD_KEY}, configure_logs=False)
    sent = anyio.run(lambda: drive_lifespan(app))
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert "AMP_API_KEY" in sent[0]["message"] and "\u2019" not in sent[0]["message"]
    failed = [r.getMessage() for r in caplog.records if "could not start" in r.getMessage()]
    assert len(failed) == 1 and "AMP_API_KEY" in failed[0]
    assert "\u2019abc" not in caplog.text
    assert upstream.requests == []


def test_a_key_in_the_config_file_that_cannot_be_sent_is_a_config_error_naming_it(
    backends, upstream, tmp_path
):
    config = tmp_path / "config.yaml"
    config.write_text(config_text(backends, upstream, anthropic_key=BAD_KEY), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"providers\[0\]\.api-key") as raised:
        ampbridge.load_settings(config, environ={})
    assert "\u2019" not in str(raised.value)
    with pytest.raises((ConfigError, ValueError), match=r"amp-upstream-api-key|amp_upstream_api_key"):
        Settings(amp_upstream_api_key="sk-\x07bell")


def test_a_key_in_amps_secrets_file_that_cannot_be_sent_is_logged_and_not_used(
    backends, upstream, bridge, caplog
):
    caplog.set_level(logging.INFO)
    secrets = platformdirs.user_data_path("amp") / "secrets.json"
    secrets.parent.mkdir(parents=True, exist_ok=True)
    secrets.write_text(json.dumps({f"apiKey@{upstream.url}/": BAD_KEY}, ensure_ascii=False), encoding="utf-8")
    server = bridge(Settings(amp_upstream_url=upstream.url))
    first = httpx.get(f"{server.url}/api/user")
    second = httpx.get(f"{server.url}/api/user")
    assert first.status_code == second.status_code == 200
    for request in upstream.requests:
        assert request.header("authorization") is None and request.header("x-api-key") is None
    warnings = [r.getMessage() for r in caplog.records if "secrets file" in r.getMessage()]
    assert len(warnings) == 1 and f"apiKey@{upstream.url}/" in warnings[0]
    assert "\u2019abc" not in caplog.text
