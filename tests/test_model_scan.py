"""The model scan: the same answer as ``json.loads(body).get("model")``, in bounded memory and
linear time, off the event loop for large bodies."""

from __future__ import annotations

import json
import time
import tracemalloc

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampbridge.model_scan import MAX_MODEL_BYTES, ModelScan, scan_model, scan_model_async

MIB = 1 << 20


def reference(body: bytes) -> ModelScan:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return ModelScan(is_object=False, model=None)
    if not isinstance(value, dict):
        return ModelScan(is_object=False, model=None)
    model = value.get("model")
    return ModelScan(is_object=True, model=model if isinstance(model, str) else None)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model":"claude-opus-4-7"}', (True, "claude-opus-4-7")),
        (b' {\n "stream": true, "model" : "gpt-5(high)" }\n', (True, "gpt-5(high)")),
        (b'{"messages":[{"model":"inner"}],"model":"outer"}', (True, "outer")),
        (b'{"a":{"model":"inner"}}', (True, None)),
        (b'{"model":"first","model":"last"}', (True, "last")),
        (b'{"model":"first","model":null}', (True, None)),
        (b'{"model":7}', (True, None)),
        (b'{"mod\\u0065l":"\\u00e9\\ud83d\\ude00\\n\\"x\\""}', (True, 'é😀\n"x"')),
        (b'{"a":"}]\\"{[","model":"m"}', (True, "m")),
        (b'{"a":[[["]"],{}],{"b":[1,2.5e3,-0,true,false,null]}],"model":"m","z":{}}', (True, "m")),
        (b"{}", (True, None)),
        (b'["model","m"]', (False, None)),
        (b'"model"', (False, None)),
        (b"", (False, None)),
        (b'{"model":"m"', (False, None)),
        (b'{"model":"m"}{}', (False, None)),
        (b'{"model":"m",}', (False, None)),
        (b'{"a":[}', (False, None)),
        (b'{"a":"unterminated', (False, None)),
        (b'{"model":"\\x"}', (False, None)),
        (b'{"model":"\xff"}', (False, None)),
        (b'{"a":tru,"model":"m"}', (False, None)),
        (b'{"a" 1}', (False, None)),
    ],
)
def test_scan_finds_the_top_level_model(body, expected):
    result = scan_model(body)
    assert (result.is_object, result.model) == expected
    assert result == reference(body)


def test_an_overlong_model_value_is_no_model():
    name = "m" * (MAX_MODEL_BYTES + 1)
    assert scan_model(json.dumps({"model": name}).encode()) == ModelScan(is_object=True, model=None)
    name = "m" * MAX_MODEL_BYTES
    assert scan_model(json.dumps({"model": name}).encode()).model == name


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab"\\{}[]:,\n é😀\x00model')),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["model", "a", "mo", "{", '"', "messages"]), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["model", "a", "x", "model "]), json_values, max_size=5),
    st.booleans(),
    st.booleans(),
)
def test_scan_agrees_with_json_loads(document, ensure_ascii, indent):
    body = json.dumps(document, ensure_ascii=ensure_ascii, indent=2 if indent else None).encode()
    assert scan_model(body) == reference(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60) | st.text(alphabet='{}[]":,0a\\ model', max_size=40).map(str.encode))
def test_scan_never_claims_a_model_json_loads_would_not_see(body):
    result = scan_model(body)
    if result.is_object:
        assert result == reference(body)
    else:
        assert result.model is None


def adversarial(kind: str, size: int = 64 * MIB) -> bytes:
    head, unit, tail = {
        "empty objects": (b'{"model":"m","x":[', b"{},", b"{}]}"),
        "small objects": (b'{"model":"m","x":[', b'{"":0},', b"{}]}"),
        "many members": (b"{", b'"a":0,', b'"model":"m"}'),
        "strings": (b'{"model":"m","x":[', b'"[",', b'""]}'),
    }[kind]
    if kind == "deep":
        return b'{"x":' + b"[" * size + b'],"model":"m"}'
    return head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail


@pytest.mark.parametrize("kind", ["empty objects", "small objects", "many members", "strings"])
def test_a_64_mib_adversarial_body_takes_bounded_memory(kind):
    body = adversarial(kind)
    tracemalloc.start()
    try:
        result = scan_model(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result == ModelScan(is_object=True, model="m")
    assert peak < len(body) // 8, f"{peak} bytes on top of a {len(body)}-byte body"


def test_a_deeply_nested_body_neither_recurses_nor_grows():
    body = b'{"x":' + b"[" * (32 * MIB) + b"]" * (32 * MIB) + b',"model":"m"}'
    tracemalloc.start()
    try:
        result = scan_model(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result == ModelScan(is_object=True, model="m")
    assert peak < MIB
    assert scan_model(body[: 32 * MIB]) == ModelScan(is_object=False, model=None)  # never closed


def test_time_grows_linearly():
    def seconds(size: int) -> float:
        body = adversarial("small objects", size)
        start = time.perf_counter()
        scan_model(body)
        return time.perf_counter() - start

    small, large = min(seconds(2 * MIB) for _ in range(3)), min(seconds(16 * MIB) for _ in range(2))
    assert large < small * 8 * 2.5, (small, large)


def test_the_event_loop_keeps_running_while_a_64_mib_body_is_scanned():
    body = adversarial("many members")
    gaps: list[float] = []

    async def main() -> ModelScan:
        done = anyio.Event()

        async def ticker() -> None:  # what /healthz needs: the loop getting a turn
            last = time.monotonic()
            while not done.is_set():
                await anyio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ticker)
            result = await scan_model_async(body)
            done.set()
        return result

    assert anyio.run(main) == ModelScan(is_object=True, model="m")
    assert len(gaps) > 5, "the scan ran long enough to watch the loop"
    assert max(gaps) < 1.0, f"the event loop stalled for {max(gaps):.2f} s"


def test_small_bodies_are_scanned_inline():
    async def main() -> ModelScan:
        return await scan_model_async(b'{"model":"m"}')

    assert anyio.run(main) == ModelScan(is_object=True, model="m")
