"""Node tokens checked against the stored hash, and the per-user write limit, on moto DynamoDB."""

from __future__ import annotations

import base64

import pytest

from chalicelib import auth, clock, config, ratelimit
from chalicelib.errors import RateLimited, Unauthenticated
from chalicelib.store.models import NodeItem, RateBucket, node_pk

#: the start of a one-minute window (divisible by 60)
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

    def test_write_over_the_limit_is_rate_limited_until_the_window_ends(self):
        # GIVEN three writes 15 s into a window
        now = WINDOW + 15
        for _ in range(3):
            ratelimit.check_write("alice", now=now)
        # WHEN a fourth write comes in the same window
        with pytest.raises(RateLimited) as caught:
            ratelimit.check_write("alice", now=now + 0.5)
        # THEN it is refused until the window ends
        assert 1 <= caught.value.retry_after <= 60
        assert caught.value.retry_after == 45

    def test_new_window_allows_writes_again(self):
        # GIVEN a user who used up a window
        for _ in range(3):
            ratelimit.check_write("alice", now=WINDOW + 59)
        with pytest.raises(RateLimited) as caught:
            ratelimit.check_write("alice", now=WINDOW + 59.9)
        assert caught.value.retry_after == 1
        # WHEN the next window starts / THEN writes are allowed again
        ratelimit.check_write("alice", now=WINDOW + 60)

    def test_users_are_limited_separately(self):
        # GIVEN alice used up her window
        for _ in range(3):
            ratelimit.check_write("alice", now=WINDOW)
        # WHEN bob writes in the same window / THEN he is not limited
        ratelimit.check_write("bob", now=WINDOW)

    def test_bucket_counts_allowed_writes_and_expires_after_its_window(self):
        # GIVEN more writes than the limit in one window
        for _ in range(3):
            ratelimit.check_write("alice", now=WINDOW + 1)
        with pytest.raises(RateLimited):
            ratelimit.check_write("alice", now=WINDOW + 1)
        # WHEN the bucket is read
        bucket = RateBucket.get(ratelimit.rate_pk("alice"), str(WINDOW), consistent_read=True)
        # THEN refused writes were not counted and the TTL is two minutes after the window
        assert bucket.hits == 3
        assert bucket.expires_at == WINDOW + 60 + 120
