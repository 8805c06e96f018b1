"""Who may see and do what in the UI: token handling, the review cache, and the HTTP
answers (401/403, CSRF, origin, security headers) with a fake reviewer. The store is
a stub that fails the test if a denied request reaches it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes import client

from ratline.store.queries import RunFilter, RunPage, RunQueries
from ratline.ui import auth
from ratline.ui.server import CSP, Config, build_app

ALICE = auth.User("alice", groups=("devs",))


class FakeReviewer:
    """Tokens map to users; `grants` holds (user, verb, namespace, resource)."""

    def __init__(self) -> None:
        self.tokens = {"alice-token": ALICE}
        self.grants = {
            ("alice", "list", "a", auth.RESOURCE),
            ("alice", "get", "a", auth.RESOURCE),
        }
        self.calls: list[Any] = []

    async def authenticate(self, token: str) -> auth.User | None:
        self.calls.append(("token", token))
        return self.tokens.get(token)

    async def allowed(self, user: auth.User, access: auth.Access) -> bool:
        self.calls.append(("sar", access))
        return (user.name, access.verb, access.namespace, access.resource) in self.grants


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class StubQueries:
    """Answers the list page for namespace 'a'; any other namespace fails the test."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def page(self, flt: RunFilter) -> RunPage:
        self.asked.append(flt.namespace)
        assert flt.namespace == "a", "the store was read for a namespace the user may not see"
        return RunPage(rows=(), next=None)

    async def workflows(self, namespace: str) -> list[str]:
        assert namespace == "a"
        return []


# -- pure decisions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "cookies", "expected"),
    [
        ({"Authorization": "Bearer abc"}, {}, "abc"),
        ({"Authorization": "bearer  abc "}, {}, "abc"),
        ({"Authorization": "Basic abc"}, {auth.COOKIE: "c"}, None),  # a header wins, even bad
        ({"Authorization": "Bearer "}, {}, None),
        ({}, {auth.COOKIE: "from-cookie"}, "from-cookie"),
        ({}, {}, None),
    ],
)
def test_bearer_token_sources(
    headers: dict[str, str], cookies: dict[str, str], expected: str | None
) -> None:
    assert auth.bearer(headers, cookies) == expected


async def test_no_or_unknown_token_is_401_and_reviews_are_cached_for_a_while() -> None:
    reviewer, clock = FakeReviewer(), Clock()
    gate = auth.Gate(reviewer, clock=clock)
    for token in (None, "", "nobody"):
        with pytest.raises(auth.Denied) as denied:
            await gate.user(token)
        assert denied.value.status == 401
    assert await gate.user("alice-token") == ALICE
    assert await gate.user("alice-token") == ALICE
    assert reviewer.calls.count(("token", "alice-token")) == 1
    clock.now += auth.TOKEN_TTL_S + 1
    await gate.user("alice-token")
    assert reviewer.calls.count(("token", "alice-token")) == 2


async def test_access_is_per_verb_and_namespace() -> None:
    reviewer = FakeReviewer()
    gate = auth.Gate(reviewer, clock=Clock())
    await gate.require(ALICE, auth.to_see("a"), auth.to_see("a", "run-1"))
    for access in (auth.to_see("b"), auth.to_act("a", "run-1")):
        with pytest.raises(auth.Denied) as denied:
            await gate.require(ALICE, access)
        assert denied.value.status == 403
    assert auth.to_see("a").verb == "list"
    assert auth.to_see("a", "x").verb == "get"
    assert auth.to_act("a", "x").verb == "patch"


def test_csrf_value_is_bound_to_the_token() -> None:
    secret = b"k" * 32
    value = auth.csrf_token(secret, "alice-token")
    assert auth.csrf_ok(secret, "alice-token", value)
    assert not auth.csrf_ok(secret, "other-token", value)
    assert not auth.csrf_ok(secret, "alice-token", None)
    assert not auth.csrf_ok(b"x" * 32, "alice-token", value)


def test_the_user_client_carries_only_the_users_token() -> None:
    base = client.Configuration()
    base.host = "https://api.example:6443"
    base.ssl_ca_cert = "/ca.crt"
    base.cert_file, base.key_file = "/ui.crt", "/ui.key"
    base.api_key = {"authorization": "Bearer ui-own-token"}
    api = auth.user_client(base, "alice-token")
    conf = api.configuration
    assert conf.host == base.host
    assert conf.ssl_ca_cert == "/ca.crt"
    assert conf.cert_file is None
    assert conf.key_file is None
    assert conf.api_key == {"authorization": "Bearer alice-token"}


# -- over HTTP ------------------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[tuple[TestClient[Any, Any], FakeReviewer, StubQueries]]:
    reviewer, queries = FakeReviewer(), StubQueries()
    conf = client.Configuration()
    conf.host = "https://127.0.0.1:1"
    app = build_app(Config(kube=conf, namespaces=("a", "b")), cast(RunQueries, queries), reviewer)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client, reviewer, queries


BEARER = {"Authorization": "Bearer alice-token"}


async def test_pages_answer_401_without_a_valid_token(http: Any) -> None:
    test_client, _, queries = http
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = await test_client.get("/ns/a/runs", headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert 'id="login"' in await response.text()
    assert queries.asked == []


async def test_a_forbidden_namespace_is_403_and_never_reaches_the_store(http: Any) -> None:
    test_client, _, queries = http
    paths = ("/ns/b/runs", "/ns/b/runs/_rows", "/ns/b/runs/x", "/ns/b/runs/x/value")
    for path in (*paths, "/ns/b/schedules", "/ns/a/schedules"):
        response = await test_client.get(path, headers=BEARER)
        assert response.status == 403, path
        assert "Forbidden" in await response.text()
    assert queries.asked == []
    response = await test_client.get("/ns/a/runs", headers=BEARER)
    assert response.status == 200
    assert queries.asked == ["a"]


async def test_start_page_lists_only_visible_namespaces(http: Any) -> None:
    test_client, _, _ = http
    response = await test_client.get("/", headers=BEARER, allow_redirects=False)
    assert response.status == 303  # the one visible namespace opens directly
    assert response.headers["Location"] == "/ns/a/runs"


async def test_actions_need_same_origin_csrf_and_patch_rights(http: Any) -> None:
    test_client, reviewer, _ = http
    page = await (await test_client.get("/ns/a/runs", headers=BEARER)).text()
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    url = "/ns/a/runs/r1/cancel"
    cases = [
        ({}, {}, 403),  # no CSRF value
        ({"csrf": "0" * 64}, {}, 403),  # a wrong one
        ({"csrf": csrf}, {"Origin": "https://evil.example"}, 403),  # another site
        ({"csrf": csrf}, {}, 403),  # right value, but alice may not patch
    ]
    for form, extra, status in cases:
        response = await test_client.post(url, data=form, headers={**BEARER, **extra})
        assert response.status == status, (form, extra)
    patch_asked = [c for c in reviewer.calls if c[0] == "sar" and c[1].verb == "patch"]
    assert len(patch_asked) == 1  # only the last case got as far as the review


async def test_security_headers_on_every_answer(http: Any) -> None:
    test_client, _, _ = http
    for path, headers in (("/login", {}), ("/ns/a/runs", BEARER), ("/ns/b/runs", BEARER)):
        response = await test_client.get(path, headers=headers)
        assert response.headers["Content-Security-Policy"] == CSP, path
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
        assert "'unsafe-inline'" not in CSP


async def test_login_sets_a_strict_httponly_cookie_and_rejects_bad_tokens(http: Any) -> None:
    test_client, _, _ = http
    response = await test_client.post(
        "/login", data={"token": "alice-token", "next": "//evil.example/"}, allow_redirects=False
    )
    assert response.status == 303
    assert response.headers["Location"] == "/"  # no open redirect
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" not in cookie
    bad = await test_client.post("/login", data={"token": "nope"}, allow_redirects=False)
    assert bad.status == 401
    assert "Set-Cookie" not in bad.headers
