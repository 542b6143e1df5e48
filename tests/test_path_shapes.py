"""Path classes and shapes, and the one-warning-per-unknown-shape drift warner."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ampbridge.path_shapes import DriftWarner, PathKind, classify_path, path_shape

FIXTURES = Path("/work/shared/fixtures/amp-traffic")


def captured_paths() -> list[str]:
    paths = []
    for capture in sorted(FIXTURES.glob("**/requests.jsonl")):
        paths += [json.loads(line)["path"] for line in capture.read_text(encoding="utf-8").splitlines()]
    return paths


def test_every_captured_path_of_the_real_clis_is_known():
    paths = captured_paths()
    assert len(paths) > 30
    unknown = [p for p in paths if not classify_path(p).known]
    assert unknown == []


@pytest.mark.parametrize(
    ("path", "kind", "shape"),
    [
        ("/api/internal", PathKind.CONTROL_PLANE, "/api/internal"),
        ("/api/thread-actors/T-00000000-0000-4000-8000-000000000001", PathKind.CONTROL_PLANE, "/api/thread-actors/{id}"),
        ("/api/provider/openai/v1/responses", PathKind.PROVIDER, "/api/provider/openai/v1/responses"),
        ("/actors/gateway/threadActor/websocket/", PathKind.ACTORS, "/actors/gateway/threadActor/websocket/"),
        ("/actors/gateway/threadActor/request/import", PathKind.ACTORS, "/actors/gateway/threadActor/request/import"),
        ("/auth/cli-login", PathKind.BROWSER, "/auth/cli-login"),
        ("/threads.rss", PathKind.BROWSER, "/threads.rss"),
        ("/_app/immutable/chunks/Bx9a.js", PathKind.BROWSER, "/_app/immutable/chunks/Bx9a.js"),
    ],
)
def test_known_paths_are_classified(path, kind, shape):
    found = classify_path(path)
    assert (found.kind, found.shape, found.known) == (kind, shape, True)


@pytest.mark.parametrize(
    ("path", "kind", "shape"),
    [
        ("/api/thread-forks/T-11111111-2222-4333-8444-555555555555/merge", PathKind.CONTROL_PLANE, "/api/thread-forks/{id}/merge"),
        ("/api/widgets/123456", PathKind.CONTROL_PLANE, "/api/widgets/{id}"),
        ("/api/widgets/M-0353l4pJrPn8HWdhEq5uyL", PathKind.CONTROL_PLANE, "/api/widgets/{id}"),
        ("/api/blobs/9f86d081884c7d659a2feaa0c55ad015", PathKind.CONTROL_PLANE, "/api/blobs/{id}"),
        ("/actors/gateway/threadActor/sse", PathKind.ACTORS, "/actors/gateway/threadActor/sse"),
        ("/actors/inspect/abcdef0123", PathKind.ACTORS, "/actors/inspect/{id}"),
        ("/login", PathKind.UNKNOWN, "/login"),
    ],
)
def test_unknown_paths_get_a_shape_without_ids(path, kind, shape):
    found = classify_path(path)
    assert (found.kind, found.shape, found.known) == (kind, shape, False)


def test_long_segments_and_deep_paths_are_bounded():
    assert path_shape("/api/x/" + "a" * 300) == "/api/x/{id}"
    assert path_shape("/a" * 40) == "/a" * 12 + "/..."


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ampbridge.drift"]


def test_one_warning_per_unknown_shape_and_none_for_known_paths(caplog):
    warner = DriftWarner()
    with caplog.at_level(logging.WARNING, logger="ampbridge.drift"):
        warner.observe("POST", "/api/internal")
        warner.observe("GET", "/api/widgets/1")
        warner.observe("GET", "/api/widgets/2")
        warner.observe("GET", "/api/widgets/3/parts")
    assert warnings(caplog) == [
        "forwarding GET /api/widgets/{id}: a control-plane path shape ampbridge does not know (a newer Amp release?)",
        "forwarding GET /api/widgets/{id}/parts: a control-plane path shape ampbridge does not know (a newer Amp release?)",
    ]


def test_warning_shows_the_shape_not_the_ids_in_the_path(caplog):
    with caplog.at_level(logging.WARNING, logger="ampbridge.drift"):
        DriftWarner().observe("GET", "/api/share/sk-secret-token-1234567890abcdef")
    assert "sk-secret" not in caplog.text
    assert "/api/share/{id}" in caplog.text


def test_memory_is_capped_and_the_cap_is_said_once(caplog):
    warner = DriftWarner(cap=3)
    with caplog.at_level(logging.WARNING, logger="ampbridge.drift"):
        for n in range(10):
            warner.observe("GET", f"/api/new-{chr(97 + n)}")
    messages = warnings(caplog)
    assert len(messages) == 4
    assert messages[-1] == "3 unknown Amp path shapes seen; not warning about more"
    assert repr(warner) == "DriftWarner(seen=3, cap=3)"
