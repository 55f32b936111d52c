"""fleetrun.local.wakeups: which write wakes which pump."""

from __future__ import annotations

import json

from fleetrun.local.wakeups import STREAM, Wakeups

QUEUE = "http://127.0.0.1:5000/123456789012/fleetrun-dispatch"


def test_a_table_write_wakes_the_stream_pump_and_no_queue_pump():
    wakeups = Wakeups()
    stream, queue = wakeups.event(STREAM), wakeups.queue(QUEUE)
    wakeups.observe("UpdateItem", b"{}")
    assert stream.is_set()
    assert not queue.is_set()


def test_a_message_sent_wakes_its_queue_whatever_host_names_the_queue():
    # GIVEN pumps of two queues, one known by another host spelling than the sender uses
    wakeups = Wakeups()
    dispatch = wakeups.queue(QUEUE)
    notify = wakeups.queue("http://127.0.0.1:5000/123456789012/fleetrun-notify")
    # WHEN a message is sent to the first through "localhost"
    body = json.dumps({"QueueUrl": "http://localhost:5000/123456789012/fleetrun-dispatch", "MessageBody": "x"})
    wakeups.observe("SendMessage", body.encode())
    # THEN only its pump wakes
    assert dispatch.is_set()
    assert not notify.is_set()


def test_a_read_or_an_unknown_action_wakes_nobody():
    wakeups = Wakeups()
    stream, queue = wakeups.event(STREAM), wakeups.queue(QUEUE)
    for action in ("GetItem", "Query", "ReceiveMessage", None):
        wakeups.observe(action, b"{}")
    assert not stream.is_set()
    assert not queue.is_set()


def test_a_form_encoded_send_wakes_every_queue_pump():
    wakeups = Wakeups()
    queue = wakeups.queue(QUEUE)
    wakeups.observe("SendMessage", b"Action=SendMessage&QueueUrl=somewhere")
    assert queue.is_set()


def test_wake_all_ends_every_pause_for_a_stop():
    wakeups = Wakeups()
    events = [wakeups.event(STREAM), wakeups.queue(QUEUE)]
    wakeups.wake_all()
    assert all(event.is_set() for event in events)
