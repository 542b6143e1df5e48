from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from ampbridge.cli import server_options
from ampbridge.http_client import SharedClient
from ampbridge.settings import Settings
from ampbridge.standalone import create_app

from .servers import FIXTURES, HEADER_STYLES, RecordingServer, ServerThread, amp_upstream, model_backend


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test sees the developer's own keys, config or Amp secrets file."""
    for name in list(os.environ):
        if (name.startswith("AMPBRIDGE_") and name != "AMPBRIDGE_SOAK_SECONDS") or name in (
            "AMP_API_KEY",
            "AMP_SETTINGS_FILE",
        ):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.chdir(home)


class _OutboundWatch(logging.Handler):
    """Notes every attempt ampbridge logs of reaching a host that is not on this machine."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "ampcode.com" in message and ("cannot reach" in message or "broke off" in message):
            self.seen.append(message)


@pytest.fixture(autouse=True)
def no_traffic_beyond_loopback() -> Iterator[None]:
    """Tests talk to 127.0.0.0/8 only: a test that makes ampbridge try the real Amp upstream (the
    default upstream URL) fails, naming the attempt."""
    watch = _OutboundWatch()
    proxy_logger = logging.getLogger("ampbridge.proxy")
    proxy_logger.addHandler(watch)
    try:
        yield
    finally:
        proxy_logger.removeHandler(watch)
    assert not watch.seen, f"the test reached for the real Amp upstream: {watch.seen}"


# The test modules that run against both header styles: where a reply's header case and framing
# matter (model calls, the compatibility fixes, gzip, SSE streams). The rest use the Go style.
BOTH_STYLES = frozenset(
    {
        "tests.test_model_calls",
        "tests.test_control_plane",
        "tests.test_amp_replay",
        "tests.test_cross_format",
        "tests.test_sdks",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "header_style" in metafunc.fixturenames:
        styles = HEADER_STYLES if metafunc.module.__name__ in BOTH_STYLES else HEADER_STYLES[:1]
        metafunc.parametrize("header_style", styles, indirect=True, scope="session")


@pytest.fixture(scope="session")
def header_style(request: pytest.FixtureRequest) -> str:
    """How the fake upstream and backends write their replies: as a Go server (canonical-case
    names) or as nginx (its own headers, chunked framing)."""
    return str(request.param)


@pytest.fixture(scope="session")
def upstream_server(header_style: str) -> Iterator[RecordingServer]:
    server = amp_upstream()
    server.header_style = header_style
    with ServerThread(server) as thread:
        server.url = thread.url  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def upstream(upstream_server: RecordingServer) -> RecordingServer:
    """The fake Amp upstream on 127.0.0.1, fresh for each test: it records what it receives."""
    upstream_server.reset()
    return upstream_server


@contextmanager
def running_bridge(
    settings: Settings,
    environ: dict[str, str] | None = None,
    client: SharedClient | None = None,
    **config: Any,
) -> Iterator[ServerThread]:
    app = create_app(settings=settings, environ=environ or {}, configure_logs=False, client=client)
    with ServerThread(app, **{**server_options(settings), **config}) as thread:
        thread.standalone = app  # type: ignore[attr-defined]
        yield thread


@pytest.fixture
def bridge() -> Iterator[Callable[..., ServerThread]]:
    """``bridge(settings, environ=None)`` starts ampbridge's standalone app on 127.0.0.1."""
    stack: list[Any] = []

    def start(
        settings: Settings,
        environ: dict[str, str] | None = None,
        client: SharedClient | None = None,
        **config: Any,
    ) -> ServerThread:
        manager = running_bridge(settings, environ, client, **config)
        thread = manager.__enter__()
        stack.append(manager)
        return thread

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


@pytest.fixture(scope="session")
def fixtures_dir():
    if not FIXTURES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"captured Amp traffic not found at {FIXTURES}")
        pytest.skip(f"captured Amp traffic not found at {FIXTURES} (it lives in ../shared beside the clone)")
    return FIXTURES


ANTHROPIC_KEY = "sk-ant-backend-key"
OPENAI_KEY = "sk-openai-backend-key"
GOOGLE_KEY = "goog-backend-key"
ANTHROPIC_MODELS = ["claude-sonnet-4-5*", "claude-haiku-4-5-20251001", "claude-opus-4-7"]
OPENAI_MODELS = ["gpt-5.4", "gpt-5-mini", "qwen3-coder"]
GOOGLE_MODELS = ["gemini-3-flash-preview", "gemini-2.5-pro"]  # discovered from the backend


@pytest.fixture(scope="session")
def backend_servers(header_style: str) -> Iterator[dict[str, RecordingServer]]:
    servers = {
        "anthropic": model_backend("anthropic-backend", ANTHROPIC_MODELS),
        "openai": model_backend("openai-backend", OPENAI_MODELS),
        "google": model_backend("google-backend", GOOGLE_MODELS),
    }
    for server in servers.values():
        server.header_style = header_style
    threads = [ServerThread(server) for server in servers.values()]
    for server, thread in zip(servers.values(), threads, strict=True):
        thread.__enter__()
        server.url = thread.url  # type: ignore[attr-defined]
    yield servers
    for thread in threads:
        thread.__exit__(None, None, None)


@pytest.fixture
def backends(backend_servers: dict[str, RecordingServer]) -> dict[str, RecordingServer]:
    """Fake Anthropic, OpenAI and Gemini APIs on 127.0.0.1, streaming real SSE; fresh per test."""
    for server in backend_servers.values():
        server.reset()
    return backend_servers


def provider_settings(backends: dict[str, RecordingServer], **settings: Any) -> Settings:
    """Settings serving the three fake backends; Gemini's models are discovered."""
    providers = [
        {
            "name": "claude",
            "type": "anthropic",
            "base-url": backends["anthropic"].url,
            "api-key": ANTHROPIC_KEY,
            "models": ANTHROPIC_MODELS,
        },
        {
            "name": "gpt",
            "type": "openai",
            "base-url": backends["openai"].url + "/v1",
            "api-key": OPENAI_KEY,
            "models": OPENAI_MODELS,
        },
        {"name": "gemini", "type": "google", "base-url": backends["google"].url, "api-key": GOOGLE_KEY},
    ]
    return Settings(providers=providers, **settings)
