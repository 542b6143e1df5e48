"""What the per-request caches keep: verdicts for the few paths and Host names clients use again
and again, never a client's oversized key, and never more than their bound."""

from __future__ import annotations

from ampbridge import routes, safe_paths
from ampbridge.provider_alias import _parsed_call, parse_provider_call
from ampbridge.trusted_hosts import MAX_KEPT_HOST, MAX_VERDICTS, HostAllowlist


def test_host_verdicts_are_bounded_and_a_long_host_is_judged_not_kept():
    hosts = HostAllowlist(["ampbridge.example"])
    long_host = "a" * 8_000_000 + ".example"
    assert not hosts.allows(long_host)
    assert hosts._verdicts == {}
    for number in range(MAX_VERDICTS + 50):
        assert not hosts.allows(f"rebind-{number}.attacker.test")
    assert len(hosts._verdicts) == MAX_VERDICTS
    assert all(len(name) <= MAX_KEPT_HOST for name in hosts._verdicts)
    assert hosts.allows("ampbridge.example:8317")  # judged the same, kept or not
    assert hosts.allows("127.0.0.1")


def test_a_long_path_is_judged_each_time_and_never_kept():
    long_path = "/api/" + "a" * 1_000_000
    kept_before = safe_paths._kept_verdict.cache_info().currsize
    assert safe_paths.is_safe_path(long_path, long_path.encode())
    assert not safe_paths.is_safe_path(long_path + "/../x", (long_path + "/../x").encode())
    assert safe_paths._kept_verdict.cache_info().currsize == kept_before

    matched_before = routes._kept_match.cache_info().currsize
    assert routes.match_api_path("v1/" + "m" * 1_000_000, "POST") is None
    assert routes._kept_match.cache_info().currsize == matched_before

    parsed_before = _parsed_call.cache_info().currsize
    scope = {"path": "/api/provider/openai/" + "p" * 1_000_000, "root_path": "", "method": "POST"}
    assert parse_provider_call(scope) is None
    assert _parsed_call.cache_info().currsize == parsed_before


def test_short_paths_are_kept_and_answered_the_same():
    scope = {"path": "/api/provider/anthropic/v1/messages", "root_path": "", "method": "POST"}
    first, again = parse_provider_call(scope), parse_provider_call(dict(scope))
    assert first is not None and again is first
    assert first.local_path == "/v1/messages"
    assert safe_paths.is_safe_path("/api/user", b"/api/user")
    assert not safe_paths.is_safe_path("/api/%2e%2e/x", b"/api/%2e%2e/x")
