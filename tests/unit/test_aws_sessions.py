"""Every AWS client of a thread comes from one botocore session (`chalicelib/aws.py`): a session
costs about as much to make as a client, and a cold start makes several clients."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import botocore.session
import pytest

from chalicelib import aws
from chalicelib.store.models import TaskItem


@pytest.fixture
def sessions_made(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[botocore.session.Session]]:
    made: list[botocore.session.Session] = []
    make = aws.new_session

    def counted() -> botocore.session.Session:
        made.append(make())
        return made[-1]

    monkeypatch.setattr(aws, "new_session", counted)
    aws.reset()
    yield made
    aws.reset()


def test_the_clients_and_item_connections_of_a_thread_share_one_session(sessions_made):
    # WHEN one thread makes two clients and an item class's DynamoDB client
    aws.client("sqs")
    aws.client("kms")
    assert TaskItem._get_connection().connection.client is not None
    # THEN it made one session
    assert len(sessions_made) == 1
    assert aws.session() is sessions_made[0]


def test_another_thread_makes_a_session_of_its_own_and_a_reset_makes_a_new_one(sessions_made):
    # GIVEN the main thread's session
    mine = aws.session()
    # WHEN another thread asks for one
    theirs: list[botocore.session.Session] = []
    thread = threading.Thread(target=lambda: theirs.append(aws.session()))
    thread.start()
    thread.join()
    # THEN it got its own (sessions are not thread-safe), and the main thread keeps its
    assert theirs[0] is not mine
    assert aws.session() is mine
    # AND after a reset (a new mock or endpoint) the thread's next session is new
    aws.reset()
    assert aws.session() is not mine
    assert len(sessions_made) == 3
