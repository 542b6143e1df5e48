"""What ampbridge logs: one routing line per model call, the request log on file, and never a key."""

from __future__ import annotations

import json
import re

import httpx
import yaml

from .test_cli import Served

SECRETS = {
    "client": "client-secret-111",
    "mapped_client": "client-secret-222",
    "upstream": "upstream-secret-333",
    "per_client_upstream": "upstream-secret-444",
    "backend": "backend-secret-555",
    "backend_header": "backend-secret-666",
    "environment": "env-secret-777",
    "secrets_file": "file-secret-888",
}


def test_a_full_run_logs_decisions_to_console_and_file_and_no_key(tmp_path, upstream, backends):
    config = {
        "debug": True,
        "logging-to-file": True,
        "amp-upstream-url": upstream.url,
        "amp-upstream-api-key": SECRETS["upstream"],
        "api-keys": [SECRETS["client"], SECRETS["mapped_client"]],
        "amp-upstream-api-keys": [
            {"upstream-api-key": SECRETS["per_client_upstream"], "api-keys": [SECRETS["mapped_client"]]}
        ],
        "amp-model-mappings": [{"from": "claude-opus-9", "to": "claude-opus-4-7"}],
        "providers": [
            {
                "name": "claude",
                "type": "anthropic",
                "base-url": backends["anthropic"].url,
                "api-key": SECRETS["backend"],
                "headers": {"X-Extra-Token": SECRETS["backend_header"]},
                "models": ["claude-opus-4-7"],
            }
        ],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "data" / "amp").mkdir(parents=True)
    (tmp_path / "data" / "amp" / "secrets.json").write_text(
        json.dumps({f"apiKey@{upstream.url}/": SECRETS["secrets_file"]})
    )
    served = Served(
        cwd=tmp_path, env={"AMP_API_KEY": SECRETS["environment"], "XDG_DATA_HOME": str(tmp_path / "data")}
    )
    try:
        url = served.url
        client, mapped = SECRETS["client"], SECRETS["mapped_client"]
        calls = [
            httpx.post(
                f"{url}/api/provider/anthropic/v1/messages?key={client}", json={"model": "claude-opus-4-7"}
            ),
            httpx.post(
                f"{url}/api/provider/anthropic/v1/messages",
                json={"model": "claude-opus-9"},
                headers={"X-Api-Key": client},
            ),
            httpx.post(
                f"{url}/api/provider/anthropic/v1/messages",
                json={"model": "claude-elsewhere"},
                headers={"Authorization": f"Bearer {mapped}"},
            ),
            httpx.post(f"{url}/api/internal?getUserInfo&auth_token={mapped}", content=b"{}"),
            httpx.get(f"{url}/api/user", headers={"X-Goog-Api-Key": client}),
            httpx.get(f"{url}/api/user?key=wrong-{client}"),
            httpx.get(f"{url}/v1/models?key={client}"),
        ]
    finally:
        console = served.stop()
    assert [c.status_code for c in calls] == [200, 200, 200, 200, 200, 401, 200]
    log_file = (tmp_path / "logs" / "requests.log").read_text()
    everything = console + log_file
    for name, secret in SECRETS.items():
        assert secret not in everything, f"the {name} key was logged"
    for text in (console, log_file):
        assert re.search(
            r"LOCAL model=claude-opus-4-7 resolved=claude-opus-4-7 provider=anthropic "
            r"path=/api/provider/anthropic/v1/messages status=200 [\d.]+ms",
            text,
        )
        assert re.search(r"MAPPED model=claude-opus-9 resolved=claude-opus-4-7 .* status=200", text)
        assert re.search(
            r"AMP_CREDITS model=claude-elsewhere resolved=claude-elsewhere .*amp-model-mappings", text
        )
        assert "key=[redacted]" in text  # the access log line, with the key masked
        # one line per model call: the routing line names the client; uvicorn's access line for
        # it is left out, while other requests keep theirs
        assert re.search(r"LOCAL model=claude-opus-4-7 .* client=127\.0\.0\.1:\d+", text)
        assert '"POST /api/provider/anthropic/v1/messages' not in text
        assert '"GET /api/user HTTP/1.1" 200' in text
    assert upstream.requests[-1].header("x-api-key") == SECRETS["upstream"]
