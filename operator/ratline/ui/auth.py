"""Who the UI's caller is and what they may do: TokenReview and SubjectAccessReview.

The UI acts as its user, never as itself: the bearer token a request carries is
verified with a TokenReview, and every page and action is authorized with a
SubjectAccessReview for that user (get/list WorkflowRuns in the namespace to look,
patch to act). The reviews go through a `Reviewer` so the decisions are unit
tested with a fake; `KubeReviewer` is the real one. Answers are cached for a few
seconds, keyed by a hash of the token, so a page that polls does not flood the API.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client

GROUP, RESOURCE = "ratline.dev", "workflowruns"
COOKIE = "ratline_token"
TOKEN_TTL_S = 30.0
ACCESS_TTL_S = 10.0
_CACHE_MAX = 4096


@dataclass(frozen=True)
class User:
    """An authenticated caller as the TokenReview named them."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Access:
    """One question to the authorizer: may `user` `verb` `resource` in `namespace`?"""

    verb: str
    namespace: str
    resource: str = RESOURCE
    group: str = GROUP
    name: str = ""


class Reviewer(Protocol):
    """The two Kubernetes reviews the UI needs (async; the real one runs in a thread)."""

    async def authenticate(self, token: str) -> User | None: ...

    async def allowed(self, user: User, access: Access) -> bool: ...


class Denied(Exception):
    """The request stops here: 401 (who are you?) or 403 (not you)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def bearer(headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
    """The caller's token: `Authorization: Bearer ...` (an authenticating proxy's or a
    script's) wins over the login cookie. Empty or malformed gives None."""
    header = headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    return cookies.get(COOKIE, "").strip() or None


class Gate:
    """Authentication and authorization decisions for the request handlers."""

    def __init__(self, reviewer: Reviewer, *, clock: Any = time.monotonic) -> None:
        self._reviewer = reviewer
        self._clock = clock
        self._users: dict[str, tuple[float, User | None]] = {}
        self._access: dict[tuple[str, Access], tuple[float, bool]] = {}
        self._lock = asyncio.Lock()

    async def user(self, token: str | None) -> User:
        """The token's user, or Denied(401) for no token or one the API rejects."""
        if not token:
            raise Denied(401)
        key = _digest(token)
        cached = self._users.get(key)
        if cached is not None and cached[0] > self._clock():
            user = cached[1]
        else:
            user = await self._reviewer.authenticate(token)
            _put(self._users, key, (self._clock() + TOKEN_TTL_S, user))
        if user is None:
            raise Denied(401)
        return user

    async def require(self, user: User, *accesses: Access) -> None:
        """Denied(403) unless every access is allowed."""
        for access in accesses:
            if not await self.allows(user, access):
                raise Denied(403)

    async def allows(self, user: User, access: Access) -> bool:
        key = (_user_key(user), access)
        cached = self._access.get(key)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        ok = await self._reviewer.allowed(user, access)
        _put(self._access, key, (self._clock() + ACCESS_TTL_S, ok))
        return ok


def to_see(namespace: str, name: str = "") -> Access:
    """A list page needs `list`, a run's page `get` of that run."""
    return Access("get" if name else "list", namespace, name=name)


def to_act(namespace: str, name: str) -> Access:
    return Access("patch", namespace, name=name)


def to_retry(namespace: str) -> list[Access]:
    """Retry creates a WorkflowRun and reads its Workflow, as `kubectl ratline retry` does."""
    return [Access("create", namespace), Access("get", namespace, resource="workflows")]


def csrf_token(secret: bytes, token: str) -> str:
    """The action forms' anti-forgery value, bound to the caller's own bearer token:
    a page of another origin can neither read it nor compute it."""
    return hmac.new(secret, b"csrf:" + token.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, token: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(csrf_token(secret, token), presented or "")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user_key(user: User) -> str:
    return "\0".join([user.name, user.uid, *sorted(user.groups)])


def _put(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()  # crude but bounded; entries live seconds anyway
    cache[key] = value


class KubeReviewer:
    """TokenReview / SubjectAccessReview with the UI's own credentials (its ServiceAccount
    may create exactly these two and nothing else)."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api

    async def authenticate(self, token: str) -> User | None:
        return await asyncio.to_thread(self._authenticate, token)

    async def allowed(self, user: User, access: Access) -> bool:
        return await asyncio.to_thread(self._allowed, user, access)

    def _authenticate(self, token: str) -> User | None:
        review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        result = client.AuthenticationV1Api(self._api).create_token_review(
            review, _request_timeout=15
        )
        status = result.status
        if status is None or not status.authenticated or status.user is None:
            return None
        info = status.user
        return User(
            name=str(info.username or ""),
            uid=str(info.uid or ""),
            groups=tuple(info.groups or ()),
            extra={k: tuple(v) for k, v in (info.extra or {}).items()},
        )

    def _allowed(self, user: User, access: Access) -> bool:
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user.name,
                uid=user.uid or None,
                groups=list(user.groups),
                extra={k: list(v) for k, v in user.extra.items()} or None,
                resource_attributes=client.V1ResourceAttributes(
                    group=access.group,
                    resource=access.resource,
                    verb=access.verb,
                    namespace=access.namespace,
                    name=access.name or None,
                ),
            )
        )
        result = client.AuthorizationV1Api(self._api).create_subject_access_review(
            review, _request_timeout=15
        )
        return bool(result.status is not None and result.status.allowed)


class UserClients:
    """API clients that are the users, one per token and reused (their connection pools
    too); the least recently used is closed beyond `size`."""

    def __init__(self, base: client.Configuration, size: int = 64) -> None:
        self._base = base
        self._size = size
        self._clients: dict[str, client.ApiClient] = {}

    def get(self, token: str) -> client.ApiClient:
        key = _digest(token)
        api = self._clients.pop(key, None) or user_client(self._base, token)
        self._clients[key] = api  # now the most recent
        while len(self._clients) > self._size:
            oldest = next(iter(self._clients))
            self._clients.pop(oldest).close()  # type: ignore[no-untyped-call]
        return api

    def close(self) -> None:
        for api in self._clients.values():
            api.close()  # type: ignore[no-untyped-call]
        self._clients.clear()


def user_client(base: client.Configuration, token: str) -> client.ApiClient:
    """An API client that is the user: the server and CA of `base`, the user's token,
    none of the UI's own credentials (client certificates, its token)."""
    conf = client.Configuration()
    conf.host = base.host
    conf.ssl_ca_cert = base.ssl_ca_cert
    conf.verify_ssl = base.verify_ssl
    conf.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(conf)
