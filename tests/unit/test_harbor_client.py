"""The Harbor v2.0 client against a real local HTTP server (no AWS)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib.errors import HarborError
from chalicelib.executors.harbor import HarborClient, HarborSettings
from tests.harbor_server import Artifact, HarborServer


@pytest.fixture
def harbor() -> Iterator[HarborServer]:
    with HarborServer("robot$unit", "pw") as server:
        for name in ("a", "b", "c"):
            server.project(name)
        server.put("a/x/y/z", *(Artifact(f"sha256:{i}", i, [f"t{i}"]) for i in range(5)))
        yield server


def client(harbor: HarborServer, sleeps: list[float] | None = None) -> HarborClient:
    settings = HarborSettings(url=harbor.url + "/", username="robot$unit", password="pw", page_size=2,
                              backoff_seconds=0.5)
    return HarborClient(settings, sleep=(sleeps.append if sleeps is not None else lambda _: None))


def test_follows_link_headers_over_every_page(harbor: HarborServer):
    assert list(client(harbor).projects()) == ["a", "b", "c"]
    assert [path for path, _ in harbor.requests()] == [
        "/api/v2.0/projects?page=1&page_size=2", "/api/v2.0/projects?page=2&page_size=2"]


def test_a_nested_repository_name_is_encoded_twice_and_every_tag_read(harbor: HarborServer):
    found = [tag for _, tags in client(harbor).artifacts("a/x/y/z") for tag in tags]
    assert [t.tag for t in found] == ["t0", "t1", "t2", "t3", "t4"]
    assert found[3].digest == "sha256:3"
    assert found[3].size_bytes == 3
    assert found[3].repository == "a/x/y/z"
    assert all("/repositories/x%252Fy%252Fz/artifacts" in path for path, _ in harbor.requests())


def test_credentials_beyond_latin_1_are_sent_in_utf_8():
    # GIVEN a Harbor account whose name and password hold characters latin-1 cannot encode
    with HarborServer("robot$équipe→eu", "пароль") as server:
        server.project("a")
        settings = HarborSettings(url=server.url, username="robot$équipe→eu", password="пароль")
        # THEN the client signs in with them (RFC 7617 Basic, UTF-8)
        assert list(HarborClient(settings, sleep=lambda _: None).projects()) == ["a"]


def test_a_missing_repository_has_no_artifacts(harbor: HarborServer):
    assert list(client(harbor).artifacts("a/gone")) == []


def test_5xx_is_retried_with_exponential_backoff(harbor: HarborServer):
    harbor.fail("/projects?page=2", 2)
    sleeps: list[float] = []
    assert list(client(harbor, sleeps).projects()) == ["a", "b", "c"]
    assert sleeps == [0.5, 1.0]


def test_a_persistent_5xx_names_the_request_and_the_tries(harbor: HarborServer):
    harbor.fail("/projects?page=2", -1)
    with pytest.raises(HarborError) as raised:
        list(client(harbor).projects())
    assert str(raised.value) == (f"Harbor GET {harbor.url}/api/v2.0/projects?page=2&page_size=2 "
                                 "answered 500 after 3 tries")


def test_bad_credentials_fail_at_once(harbor: HarborServer):
    settings = HarborSettings(url=harbor.url, username="robot$unit", password="nope")
    with pytest.raises(HarborError, match="answered 401: check the robot account"):
        list(HarborClient(settings).projects())
    assert len(harbor.requests()) == 1


def test_an_unreachable_harbor_fails_after_the_tries():
    settings = HarborSettings(url="http://127.0.0.1:9", tries=2, backoff_seconds=0, timeout_seconds=1)
    with pytest.raises(HarborError, match=r"^Harbor GET http://127.0.0.1:9/api/v2.0/projects\?page=1&page_size=100 "
                                          r"failed after 2 tries \("):
        list(HarborClient(settings).projects())


class _LinkingTo:
    """An HTTP stand-in: a first page whose `Link` names `next_url`, then empty last pages."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url
        self.urls: list[str] = []

    def request(self, method: str, url: str, **_: object) -> object:
        self.urls.append(url)
        first = len(self.urls) == 1

        class Page:
            status = 200
            data = b'[{"name": "a"}]' if first else b"[]"
            headers = {"Link": f'<{self.next_url}>; rel="next"'} if first else {}

        return Page()


def test_a_next_page_link_to_another_host_is_not_followed_with_the_robots_credentials():
    # GIVEN a Harbor whose first page links its "next" page on another host
    http = _LinkingTo("http://169.254.169.254/latest/meta-data/?page=2")
    harbor = HarborClient(HarborSettings(url="https://harbor.example.com", username="robot$unit", password="pw"),
                          http=http)  # type: ignore[arg-type]

    # WHEN every project is listed  THEN the listing stops before that request
    with pytest.raises(HarborError, match="next-page link points at another host"):
        list(harbor.projects())
    assert http.urls == ["https://harbor.example.com/api/v2.0/projects?page=1&page_size=100"]
