"""services/realtime/sender.py: one failed message does not stop the rest of its connection's
messages, one failed connection never stops the others, and nothing over 128 KiB is posted."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.services.realtime import sender


class _Gone(Exception):
    pass


class _Client:
    """A `@connections` client: posts whose data contains `fail` raise, connection `boom` breaks."""

    class exceptions:  # noqa: N801 (botocore's shape)
        GoneException = _Gone

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def post_to_connection(self, ConnectionId: str, Data: bytes) -> None:  # noqa: N803 (boto3's names)
        message = json.loads(Data)
        if ConnectionId == "boom":
            raise RuntimeError("an unexpected failure")
        if message.get("fail"):
            raise ClientError({"Error": {"Code": "LimitExceededException", "Message": "slow down"}},
                              "PostToConnection")
        with self.lock:
            self.posted.append((ConnectionId, message))


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> _Client:
    fake = _Client()
    monkeypatch.setattr(sender, "management_client", lambda: fake)
    return fake


def test_a_failed_message_is_skipped_and_the_rest_of_the_connection_s_messages_still_go(client: _Client):
    # WHEN the second of three messages fails
    sent = sender.send("c1", [{"n": 1}, {"n": 2, "fail": True}, {"n": 3}])
    # THEN the third still went, and the connection is not reported gone
    assert sent is True
    assert [m["n"] for _, m in client.posted] == [1, 3]


def test_one_failed_connection_never_stops_the_others(client: _Client):
    outbox = {"boom": [{"n": 0}], **{f"c{i}": [{"n": i}] for i in range(1, 6)}}
    assert sender.send_all(outbox) == 0
    assert sorted(c for c, _ in client.posted) == [f"c{i}" for i in range(1, 6)]


def test_a_message_over_128_kib_is_never_posted(client: _Client):
    big = {"type": "task", "blob": "x" * sender.FRAME_BYTES_MAX}
    assert sender.send("c1", [big, {"n": 1}]) is True
    assert [m for _, m in client.posted] == [{"n": 1}]
