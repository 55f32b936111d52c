"""Node tokens checked against the stored hash, and the per-user write limit, on moto DynamoDB."""

from __future__ import annotations

import base64
import threading

import pytest

from chalicelib import auth, clock, config, ratelimit
from chalicelib.errors import Busy, RateLimited, Unauthenticated
from chalicelib.store.models import NodeItem, RateBucket, node_pk

#: the start of a minute (divisible by 60)
WINDOW = 1_800_000_000


def register(node_id: str) -> str:
    token, token_hash = auth.new_node_token(node_id)
    NodeItem(node_pk(node_id), "META", node_id=node_id, token_hash=token_hash, created_at=clock.now_iso()).save()
    return token


class TestAuthenticateNode:
    def test_registered_token_authenticates_its_node(self, aws):
        # GIVEN a node registered with the hash of its token
        token = register("edge-12")
        # WHEN the agent presents the token
        node_id = auth.authenticate_node(f"Bearer {token}")
        # THEN it is that node
        assert node_id == "edge-12"

    def test_token_of_unregistered_node_is_unauthenticated(self, aws):
        # GIVEN a well-formed token for a node that was never registered
        token, _ = auth.new_node_token("edge-99")
        # WHEN / THEN
        with pytest.raises(Unauthenticated, match="node token is not valid"):
            auth.authenticate_node(f"Bearer {token}")

    def test_secret_of_one_node_under_another_node_id_is_unauthenticated(self, aws):
        # GIVEN two registered nodes, and edge-12's secret relabelled as edge-13's
        token_12 = register("edge-12")
        register("edge-13")
        secret_12 = token_12.split(".")[2]
        encoded_13 = base64.urlsafe_b64encode(b"edge-13").rstrip(b"=").decode()
        forged = f"frn.{encoded_13}.{secret_12}"
        # WHEN / THEN the hash does not match edge-13's
        with pytest.raises(Unauthenticated, match="node token is not valid"):
            auth.authenticate_node(f"Bearer {forged}")

    def test_tampered_secret_is_unauthenticated(self, aws):
        # GIVEN a registered node's token with one character of its secret changed
        token = register("edge-12")
        tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
        # WHEN / THEN
        with pytest.raises(Unauthenticated, match="node token is not valid"):
            auth.authenticate_node(f"Bearer {tampered}")

    def test_missing_header_is_unauthenticated(self, aws):
        # GIVEN / WHEN / THEN
        with pytest.raises(Unauthenticated):
            auth.authenticate_node(None)


class TestWriteRateLimit:
    @pytest.fixture(autouse=True)
    def limit_of_three(self, aws, monkeypatch):
        monkeypatch.setenv("FLEETRUN_RATE_LIMIT", "3")
        config.reset()

    def test_a_write_over_the_limit_is_refused_until_the_oldest_counted_second_leaves(self):
        # GIVEN three writes 15 s into a minute
        for _ in range(3):
            ratelimit.check_write("alice", now=WINDOW + 15)
        # WHEN a fourth comes half a second later
        with pytest.raises(RateLimited) as caught:
            ratelimit.check_write("alice", now=WINDOW + 15.5)
        # THEN it is refused until second 15 stops counting (at 76: 61 whole seconds after it)
        assert caught.value.retry_after == 61
        # AND a minute later is not enough, not even across the minute boundary
        with pytest.raises(RateLimited) as caught:
            ratelimit.check_write("alice", now=WINDOW + 75.5)
        assert caught.value.retry_after == 1
        ratelimit.check_write("alice", now=WINDOW + 76)

    def test_the_boundary_attack_600_at_0_59_9_and_600_at_1_00_1_lets_600_through(self, monkeypatch):
        # GIVEN the default limit, and 600 writes at 0:59.9
        monkeypatch.setenv("FLEETRUN_RATE_LIMIT", "600")
        config.reset()
        for _ in range(600):
            ratelimit.check_write("alice", now=WINDOW + 59.9)
        # WHEN 600 more come at 1:00.1 (a fixed window would have started again)
        refused = []
        for _ in range(600):
            with pytest.raises(RateLimited) as caught:
                ratelimit.check_write("alice", now=WINDOW + 60.1)
            refused.append(caught.value.retry_after)
        # THEN every one is refused, each told to wait until the first 600 stop counting
        assert refused == [60] * 600
        ratelimit.reset()  # and so is one checked by a container that never saw alice
        with pytest.raises(RateLimited):
            ratelimit.check_write("alice", now=WINDOW + 119.9)
        ratelimit.check_write("alice", now=WINDOW + 120)

    def test_users_are_limited_separately(self):
        # GIVEN alice used up her window
        for _ in range(3):
            ratelimit.check_write("alice", now=WINDOW)
        # WHEN bob writes in the same window / THEN he is not limited
        ratelimit.check_write("bob", now=WINDOW)

    def test_the_item_holds_allowed_writes_per_second_and_expires_after_they_stop_counting(self):
        # GIVEN two writes at :01 and one at :02, then a refused one
        for at in (WINDOW + 1, WINDOW + 1.5, WINDOW + 2):
            ratelimit.check_write("alice", now=at)
        with pytest.raises(RateLimited):
            ratelimit.check_write("alice", now=WINDOW + 2)
        # WHEN the item is read
        item = RateBucket.get(ratelimit.rate_pk("alice"), "WINDOW", consistent_read=True)
        # THEN refused writes were not counted, and TTL may delete it 2 minutes after :02 stops counting
        assert (item.seconds, item.counts) == ([WINDOW + 1, WINDOW + 2], [2, 1])
        assert item.expires_at == WINDOW + 2 + 61 + 120

    def test_concurrent_writers_in_several_containers_never_get_more_than_the_limit(self):
        # GIVEN four containers and 8 threads, each thread making 10 writes of alice at one instant
        containers = [ratelimit.RateLimiter() for _ in range(4)]
        outcomes: list[str] = []

        def writer(n: int) -> None:
            for _ in range(10):
                try:
                    containers[n % 4].check("alice", 20, now=WINDOW + 30)
                    outcomes.append("allowed")
                except RateLimited:
                    outcomes.append("refused")

        # WHEN they race
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # THEN exactly the limit got through, and the item counts exactly those
        assert (outcomes.count("allowed"), outcomes.count("refused")) == (20, 60)
        item = RateBucket.get(ratelimit.rate_pk("alice"), "WINDOW", consistent_read=True)
        assert item.counts == [20]


    def test_a_burst_of_one_users_writes_in_one_process_is_counted_without_a_409(self):
        # GIVEN one container (the local runtime's threaded server) and 30 concurrent writes of
        # alice, under her limit (the e2e burst that answered `409 conflict` to some of them)
        lost: list[bool] = []

        class Counted(ratelimit.DynamoWindows):
            def replace(self, user_id: str, window: ratelimit.Window, expected: str | None) -> bool:
                written = super().replace(user_id, window, expected)
                lost.append(not written)
                return written

        container = ratelimit.RateLimiter(Counted())
        outcomes: list[str] = []

        def writer() -> None:
            try:
                container.check("alice", 600, now=WINDOW + 30)
                outcomes.append("allowed")
            except Busy:
                outcomes.append("busy")

        # WHEN they race
        threads = [threading.Thread(target=writer) for _ in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # THEN every one was counted, each with one write: they took turns instead of racing
        assert outcomes == ["allowed"] * 30
        assert lost == [False] * 30
        item = RateBucket.get(ratelimit.rate_pk("alice"), "WINDOW", consistent_read=True)
        assert item.counts == [30]


class TestRequestsPerWrite:
    """What the limiter costs in DynamoDB requests (ratelimit.py lists them)."""

    @pytest.fixture
    def requests(self, aws) -> list[str]:
        made: list[str] = []
        client = RateBucket._get_connection().connection.client
        client.meta.events.register("before-call.dynamodb", lambda model, **_: made.append(model.name))
        return made

    def test_an_allowed_write_costs_one_put_once_the_container_knows_the_user(self, requests):
        # GIVEN a container that never saw alice
        container = ratelimit.RateLimiter()
        # WHEN she writes twice / THEN a read and a write, then a write alone
        container.check("alice", 3, now=WINDOW)
        assert requests == ["GetItem", "PutItem"]
        requests.clear()
        container.check("alice", 3, now=WINDOW + 1)
        assert requests == ["PutItem"]

    def test_a_write_after_another_containers_costs_a_failed_put_a_read_and_a_put(self, requests):
        # GIVEN alice wrote through container A, then through container B
        a, b = ratelimit.RateLimiter(), ratelimit.RateLimiter()
        a.check("alice", 3, now=WINDOW)
        b.check("alice", 3, now=WINDOW)
        requests.clear()
        # WHEN she writes through A again / THEN its stale state costs one failed write and a read
        a.check("alice", 3, now=WINDOW + 1)
        assert requests == ["PutItem", "GetItem", "PutItem"]

    def test_a_refused_write_costs_nothing_once_the_container_saw_the_limit_reached(self, requests):
        # GIVEN alice used up her limit through container A
        a, b = ratelimit.RateLimiter(), ratelimit.RateLimiter()
        for _ in range(3):
            a.check("alice", 3, now=WINDOW)
        requests.clear()
        # WHEN she writes again through A, then through B, which never saw her
        with pytest.raises(RateLimited):
            a.check("alice", 3, now=WINDOW + 1)
        assert requests == []
        with pytest.raises(RateLimited):
            b.check("alice", 3, now=WINDOW + 1)
        # THEN A refused without a request, B after one read
        assert requests == ["GetItem"]
