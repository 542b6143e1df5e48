"""Issue 10: ``ampbridge.app()`` as a library, mounted in Starlette and FastAPI with no lifespan
plumbing; the lifespan protocol when a host does run it; one credential rule for the client-key
query parameter; settings that take only what they are given."""

from __future__ import annotations

import importlib
import io
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import ampbridge
from ampbridge.http_client import SharedClient
from ampbridge.logs import OWNED_LOGGERS, configure_logging
from ampbridge.models import as_local_models
from ampbridge.settings import ConfigError, Settings, load_settings

from .conftest import ANTHROPIC_KEY, ANTHROPIC_MODELS, provider_settings
from .servers import RecordingServer, ServerThread

CLIENT_KEY = "client-key-for-the-library"


def write_config(
    directory: Path, backends: dict[str, RecordingServer], upstream: RecordingServer, **extra: Any
) -> Path:
    config = {
        "amp-upstream-url": upstream.url,
        "providers": [
            {
                "name": "claude",
                "type": "anthropic",
                "base-url": backends["anthropic"].url,
                "api-key": ANTHROPIC_KEY,
                "models": ANTHROPIC_MODELS,
            }
        ],
        **extra,
    }
    path = directory / "bridge.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def check_host_app(url: str, backends: dict[str, RecordingServer], upstream: RecordingServer) -> None:
    """What a host app with ``/api`` and ``/`` mounts serves: the provider's models locally,
    Amp's API upstream, the root routes, and its own routes."""
    local = httpx.post(
        f"{url}/api/provider/anthropic/v1/messages",
        json={"model": "claude-opus-4-7", "max_tokens": 5, "messages": []},
    )
    assert local.status_code == 200, local.text
    assert local.headers["x-served-by"] == "anthropic-backend"
    assert backends["anthropic"].requests[-1].path == "/v1/messages"
    assert backends["anthropic"].requests[-1].header("x-api-key") == ANTHROPIC_KEY

    user = httpx.get(f"{url}/api/user")
    assert user.json() == {"upstream": True, "path": "/api/user"}
    actors = httpx.get(f"{url}/actors/gateway/threadActor/request/ping")
    assert actors.json() == {"upstream": True, "path": "/actors/gateway/threadActor/request/ping"}
    assert [r.path for r in upstream.requests] == ["/api/user", "/actors/gateway/threadActor/request/ping"]
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/hello").status_code == 200


@pytest.mark.parametrize("example", ["starlette_app", "fastapi_app"])
def test_the_examples_mount_the_configured_bridge_without_a_lifespan(
    example, backends, upstream, tmp_path, monkeypatch
):
    monkeypatch.setenv("AMPBRIDGE_CONFIG", str(write_config(tmp_path, backends, upstream)))
    module = importlib.reload(importlib.import_module(f"examples.{example}"))
    assert module.amp.runtime.built is None  # nothing started at import
    with ServerThread(module.app) as server:
        check_host_app(server.url, backends, upstream)
    assert module.amp.runtime.built is not None  # started by its first request


def test_a_config_argument_and_mounts_written_with_mount(backends, upstream, tmp_path):
    amp = ampbridge.app(config=write_config(tmp_path, backends, upstream), environ={})

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    host = Starlette(routes=[Route("/hello", hello), Mount("/api", app=amp), Mount("/", app=amp.root)])
    with ServerThread(host) as server:
        check_host_app(server.url, backends, upstream)


def test_a_host_that_runs_the_lifespan_closes_the_shared_client(backends, upstream, tmp_path):
    shared = SharedClient()
    amp = ampbridge.app(config=write_config(tmp_path, backends, upstream), environ={}, client=shared)
    host = Starlette(routes=[Mount("/api", app=amp)], lifespan=amp.lifespan)
    with ServerThread(host, lifespan="on") as server:
        reply = httpx.post(
            f"{server.url}/api/provider/anthropic/v1/messages",
            json={"model": "claude-opus-4-7", "max_tokens": 5, "messages": []},
        )
        assert reply.status_code == 200
        assert httpx.get(f"{server.url}/api/user").status_code == 200
        used = shared.client
        assert not used.is_closed
    assert used.is_closed  # closed by the host's shutdown
    assert shared.client is not used  # the next use opens a new one


def test_a_mounted_app_with_a_config_that_does_not_load_answers_503_with_the_reason(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [{name: x, type: nonsense}]\n")
    host = Starlette(routes=[Mount("/api", app=ampbridge.app(config=bad, environ={}))])
    with ServerThread(host) as server:
        reply = httpx.get(f"{server.url}/api/user")
    assert reply.status_code == 503
    assert reply.json()["error"] == "ampbridge_not_configured"
    assert "bad.yaml" in reply.json()["message"]


# --- the lifespan protocol ---------------------------------------------------------------


async def drive_lifespan(
    app: Any, *, while_running: Callable[[], Awaitable[None]] | None = None
) -> list[dict[str, Any]]:
    """Runs ``app``'s lifespan as a server does (startup; after ``startup.complete``, awaits
    ``while_running`` and sends shutdown) until the app returns; returns what it sent."""
    sent: list[dict[str, Any]] = []
    to_app, from_server = anyio.create_memory_object_stream[dict[str, Any]](4)
    answered = anyio.Event()
    returned = anyio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        answered.set()

    async def run_app() -> None:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, from_server.receive, send)
        returned.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run_app)
            await to_app.send({"type": "lifespan.startup"})
            await answered.wait()
            if sent[0]["type"] == "lifespan.startup.complete":
                if while_running is not None:
                    await while_running()
                await to_app.send({"type": "lifespan.shutdown"})
            await returned.wait()
    return sent


def test_a_startup_failure_sends_startup_failed_and_nothing_after(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: not-a-port\n")
    sent = anyio.run(lambda: drive_lifespan(ampbridge.app(config=bad, environ={})))
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert "bad.yaml" in sent[0]["message"]


def test_a_background_job_failing_after_startup_never_sends_startup_failed(monkeypatch, caplog):
    amp = ampbridge.app(settings=Settings(amp_upstream_url=""), environ={})
    job_ran = anyio.Event()

    async def exploding_ledger() -> None:
        job_ran.set()
        raise RuntimeError("disk on fire")

    original_jobs = amp.runtime.jobs

    def jobs() -> list[Any]:
        from ampbridge.supervisor import Job

        return [*original_jobs(), Job("exploding job", exploding_ledger, 60.0)]

    monkeypatch.setattr(amp.runtime, "jobs", jobs)

    async def after_the_job_failed() -> None:
        await job_ran.wait()
        await anyio.wait_all_tasks_blocked()  # the failure has been handled and logged

    sent = anyio.run(lambda: drive_lifespan(amp, while_running=after_the_job_failed))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert "background job 'exploding job' failed (RuntimeError: disk on fire)" in caplog.text


# --- the client-key query parameter ---------------------------------------------------------


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """ampbridge's own log setup (as ``ampbridge serve`` makes it), writing to a buffer; the
    loggers are put back afterwards."""
    saved = {
        name: (logging.getLogger(name), list(logging.getLogger(name).handlers)) for name in OWNED_LOGGERS
    }
    state = {name: (logger.level, logger.propagate) for name, (logger, _) in saved.items()}
    configure_logging(level="INFO")
    buffer = io.StringIO()
    for name in OWNED_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(buffer)  # type: ignore[arg-type]
    yield buffer
    for name, (logger, handlers) in saved.items():
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(state[name][0])
        logger.propagate = state[name][1]


def test_an_encoded_key_parameter_is_a_client_key_that_goes_nowhere_and_is_masked(
    backends, upstream, bridge, console, caplog
):
    caplog.set_level(logging.INFO)
    server = bridge(provider_settings(backends, amp_upstream_url=upstream.url, api_keys=[CLIENT_KEY]))
    model = httpx.post(
        f"{server.url}/api/provider/anthropic/v1/messages?beta=true&k%65y={CLIENT_KEY}&x=%2F1",
        json={"model": "claude-opus-4-7", "max_tokens": 5, "messages": []},
    )
    user = httpx.get(f"{server.url}/api/user?k%65y={CLIENT_KEY}&keep=a%20b")
    wrong = httpx.get(f"{server.url}/api/user?k%65y=wrong-{CLIENT_KEY}")
    assert model.status_code == 200 and model.headers["x-served-by"] == "anthropic-backend"
    assert user.json() == {"upstream": True, "path": "/api/user"}
    assert wrong.status_code == 401
    assert backends["anthropic"].requests[-1].query == b"beta=true&x=%2F1"  # the rest keeps its bytes
    assert upstream.requests[-1].query == b"keep=a%20b"
    assert len(upstream.requests) == 1
    for recorded in (*backends["anthropic"].requests, *upstream.requests):
        assert CLIENT_KEY not in repr(recorded)
    text = console.getvalue()
    assert "/api/user?k%65y=[redacted]" in text  # uvicorn's access line, masked
    assert "LOCAL model=claude-opus-4-7" in text  # ampbridge's own line
    assert CLIENT_KEY not in text


# --- settings take what they are given ----------------------------------------------------


def test_settings_refuse_an_unknown_keyword():
    with pytest.raises(Exception, match="bogus"):
        Settings(bogus=1)  # type: ignore[call-arg]


def test_load_settings_reads_only_the_mapping_it_is_given(tmp_path, monkeypatch):
    config = tmp_path / "given.yaml"
    config.write_text("port: 9001\nmax-body-size: 12345\n")
    monkeypatch.setenv("AMPBRIDGE_CONFIG", str(tmp_path / "missing.yaml"))  # the process's: ignored
    monkeypatch.setenv("AMPBRIDGE_DEBUG", "true")
    settings = load_settings(environ={"AMPBRIDGE_CONFIG": str(config), "AMPBRIDGE_PORT": "9002"})
    assert settings.port == 9002  # the mapping's variable beats the file
    assert settings.max_body_size == 12345  # the file the mapping names
    assert settings.debug is False  # the process environment is not read
    assert load_settings(environ={}).port != 9002


def test_load_settings_finds_the_user_config_dir_the_mapping_names(tmp_path, monkeypatch):
    user_dir = tmp_path / "xdg"
    (user_dir / "ampbridge").mkdir(parents=True)
    (user_dir / "ampbridge" / "config.yaml").write_text("port: 9003\n")
    monkeypatch.chdir(tmp_path)
    found = load_settings(environ={"XDG_CONFIG_HOME": str(user_dir)})
    assert found.port == 9003  # the user config dir as the mapping places it


def test_as_local_models_reads_a_generator_once():
    names = (name for name in ["qwen*", "llama-3"])
    models = as_local_models(names)
    chat = ampbridge.WireFormat.OPENAI
    assert models.serves("qwen3-coder", chat) and models.serves("llama-3", chat)
    assert models.serves("qwen2", chat)  # asked again: the patterns were kept
    assert not models.serves("gpt-5", chat)


def test_a_bad_amp_key_in_the_environment_is_a_config_error_naming_it(tmp_path):
    amp = ampbridge.app(
        settings=Settings(amp_upstream_url="http://127.0.0.1:9"), environ={"AMP_API_KEY": "sk-\u2019abc"}
    )

    async def first_call() -> None:
        with pytest.raises(ConfigError, match="AMP_API_KEY") as raised:
            await amp.runtime.current()
        assert "\u2019abc" not in str(raised.value)

    anyio.run(first_call)
