"""`manage.py send_event CHANNEL DATA [--event TYPE]` (README "Python interface"), in-process
and as a real process."""

from __future__ import annotations

import subprocess
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from events.models import Event
from tests.layer_probe import GroupListener
from tests.servers import manage
from tests.streams import channel

pytestmark = pytest.mark.django_db(transaction=True)


ARRIVE = 3.0
QUIET = 0.5
PROCESS_TIMEOUT = 60


def send(*args: str) -> str:
    out = StringIO()
    call_command("send_event", *args, stdout=out)
    return out.getvalue()


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return manage(env, "send_event", *args, timeout=PROCESS_TIMEOUT)


def test_prints_the_id_and_broadcasts() -> None:
    name = channel()
    with GroupListener(name) as listener:
        assert send(name, '{"id": 42, "status": "paid"}') == f"{name}:1\n"
        assert send(name, "[1, 2]") == f"{name}:2\n"
        received = listener.messages(count=2, timeout=ARRIVE)
    assert [(m["seq"], m["event"], m["data"]) for m in received] == [
        (1, "message", '{"id":42,"status":"paid"}'),
        (2, "message", "[1,2]"),
    ]


@pytest.mark.parametrize(
    ("data", "stored"),
    [
        ('{"a": 1}', '{"a":1}'),
        ("42", "42"),
        ("null", "null"),
        ('"quoted"', '"quoted"'),
        ("hello world", '"hello world"'),
        ("{not json", '"{not json"'),
        ("", '""'),
    ],
    ids=["object", "number", "null", "json-string", "plain-string", "broken-json", "empty"],
)
def test_data_is_json_or_else_a_string(data: str, stored: str) -> None:
    name = channel()
    assert send(name, data) == f"{name}:1\n"
    assert Event.objects.get(channel=name).data == stored


@pytest.mark.parametrize(
    ("data", "noted"),
    [('{"a": 1', True), ("[1, 2", True), ("hello world", False), ("42", False)],
    ids=["broken-object", "broken-array", "plain-string", "json"],
)
def test_json_that_looks_broken_is_noted_on_stderr(data: str, noted: bool) -> None:
    name = channel()
    out, err = StringIO(), StringIO()
    call_command("send_event", name, data, stdout=out, stderr=err)
    assert out.getvalue() == f"{name}:1\n"
    if noted:
        assert err.getvalue().count("\n") == 1
        assert "not valid JSON" in err.getvalue() and "as a string" in err.getvalue()
    else:
        assert err.getvalue() == ""


@pytest.mark.parametrize("data", ["NaN", "Infinity", "-Infinity", '{"x": NaN}'])
def test_non_json_number_literals_are_taken_as_a_string(data: str) -> None:
    name = channel()
    # "--" ends the options, so that "-Infinity" is DATA and not an unknown option.
    assert send("--", name, data) == f"{name}:1\n"
    assert Event.objects.get(channel=name).payload == data


def test_event_option() -> None:
    name = channel()
    with GroupListener(name) as listener:
        assert send(name, "1", "--event", "order-paid") == f"{name}:1\n"
        [message] = listener.messages(count=1, timeout=ARRIVE)
    assert message["event"] == "order-paid"
    assert Event.objects.get(channel=name).type == "order-paid"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["bad name", "1"], r"channel 'bad name' may only contain"),
        (["", "1"], r"must be 1 to 80 characters"),
        (["x" * 81, "1"], r"must be 1 to 80 characters"),
        (["ok", "1", "--event", "bad type"], r"event type 'bad type' may only contain"),
        (["ok", "1", "--event", ""], r"must be 1 to 64 characters"),
    ],
    ids=["channel-space", "channel-empty", "channel-too-long", "type-space", "type-empty"],
)
def test_bad_input_is_a_one_line_command_error(args: list[str], match: str) -> None:
    before = Event.objects.count()
    with pytest.raises(CommandError, match=match) as info:
        send(*args)
    assert "\n" not in str(info.value)
    assert Event.objects.count() == before


def test_payload_over_the_limit_is_a_command_error(settings) -> None:
    settings.EVENTS_MAX_PAYLOAD_BYTES = 10
    name = channel()
    with pytest.raises(CommandError, match="over the limit of 10 bytes") as info:
        send(name, '"' + "x" * 20 + '"')
    assert "\n" not in str(info.value)
    assert not Event.objects.filter(channel=name).exists()


def test_real_process_prints_the_id_and_broadcasts(server_env: dict[str, str]) -> None:
    name = channel()
    with GroupListener(name) as listener:
        result = run(server_env, name, '{"from": "cli"}', "--event", "cli-test")
        received = listener.messages(count=1, timeout=ARRIVE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{name}:1\n"
    assert received == [
        {"type": "events.event", "channel": name, "seq": 1, "event": "cli-test", "data": '{"from":"cli"}'}
    ]
    assert Event.objects.filter(channel=name, seq=1, type="cli-test").exists()


def test_real_process_plain_string(server_env: dict[str, str]) -> None:
    name = channel()
    result = run(server_env, name, "just words")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{name}:1\n"
    assert Event.objects.get(channel=name).data == '"just words"'


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["bad name", "1"], "channel 'bad name' may only contain"),
        (["a/b", "1"], "channel 'a/b' may only contain"),
        (["ok-channel", "1", "--event", "bad type"], "event type 'bad type' may only contain"),
        (["ok-channel", "1", "--event", "x" * 65], "must be 1 to 64 characters"),
    ],
    ids=["channel-space", "channel-slash", "type-space", "type-too-long"],
)
def test_real_process_bad_input_exits_with_one_line(
    server_env: dict[str, str], args: list[str], reason: str
) -> None:
    before = Event.objects.count()
    with GroupListener("ok-channel") as listener:
        result = run(server_env, *args)
        assert listener.messages(timeout=QUIET) == []
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert reason in lines[0]
    assert "Traceback" not in result.stderr
    assert Event.objects.count() == before


def test_real_process_missing_arguments_exits_non_zero(server_env: dict[str, str]) -> None:
    result = run(server_env, "only-a-channel")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("port", ["abc", "0", "70000"])
def test_serve_with_a_bad_port_exits_with_a_reason(server_env: dict[str, str], port: str) -> None:
    result = manage({**server_env, "PORT": port}, "serve")
    assert result.returncode == 2
    assert f"not a TCP port: {port!r}" in result.stderr
    assert "Traceback" not in result.stderr
