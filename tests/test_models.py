"""Model names: thinking suffixes, and the name a backend is sent."""

from __future__ import annotations

import pytest

from ampbridge.mapping import ModelMapper, RouteDecision, decide
from ampbridge.models import ModelPatterns, WireFormat, model_to_send, split_thinking_suffix
from ampbridge.settings import ModelMapping


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-5()", ("gpt-5", "")),
        ("gpt-5(  )", ("gpt-5", "")),
        ("gpt-5(\t)", ("gpt-5", "")),
        ("gpt-5(high)", ("gpt-5", "(high)")),
        ("gpt-5( high )", ("gpt-5", "( high )")),
        ("a(b)()", ("a(b)", "")),
        ("()", ("()", "")),
    ],
)
def test_an_empty_thinking_suffix_is_no_suffix(model, expected):
    assert split_thinking_suffix(model) == expected


@pytest.mark.parametrize(
    ("model", "sent"),
    [
        ("gpt-5()", "gpt-5"),
        ("gpt-5( )", "gpt-5"),
        ("gpt-5(high)", "gpt-5(high)"),
        ("gpt-5", "gpt-5"),
        ("()", "()"),
    ],
)
def test_the_name_sent_on_drops_only_an_empty_suffix(model, sent):
    assert model_to_send(model) == sent


def route(model: str, target: str) -> tuple[RouteDecision, str]:
    mapper = ModelMapper([ModelMapping.model_validate({"from": "remote", "to": target})])
    return decide(model, WireFormat.OPENAI, ModelPatterns(["local-a"]), mapper)


def test_a_mapping_target_ending_in_empty_parentheses_sends_the_bare_name():
    assert route("remote", "local-a()") == (RouteDecision.MAPPED, "local-a")


def test_a_request_with_an_empty_suffix_is_mapped_to_the_bare_target():
    assert route("remote()", "local-a") == (RouteDecision.MAPPED, "local-a")


def test_a_real_suffix_still_travels_through_a_mapping_whose_target_has_empty_parentheses():
    assert route("remote(high)", "local-a()") == (RouteDecision.MAPPED, "local-a(high)")
