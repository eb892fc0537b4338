"""Logging in and out, API keys, failed-login throttling and R6 over real HTTP, on PostgreSQL."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import httpx
import msgspec
import psycopg
import pytest
from psycopg import sql

from picasse.adapters.clock import ManualClock
from picasse.adapters.http.app import HttpDeps, create_app
from picasse.adapters.http.auth import (
    SESSION_COOKIE,
    SESSION_LIFETIME,
    LoginThrottling,
    ThrottlePolicy,
)
from picasse.domain.values import Role
from picasse.runners.api import http_deps
from picasse.runners.settings import Settings
from tests.integration.api_server import (
    PASSWORD,
    Tenant,
    add_staff,
    make_tenant,
    module_settings,
    self_signed_certificate,
    serving,
    with_cheap_passwords,
)
from tests.users import add_customer_user

WINDOW = timedelta(minutes=15)
ONE_SECOND = timedelta(seconds=1)
# Small numbers; the waits pass by moving the API's clock, never by sleeping.
THROTTLING = LoginThrottling(
    per_account=ThrottlePolicy(
        slow_after=6, window=WINDOW, first_delay=timedelta(seconds=0.3), max_delay=ONE_SECOND
    ),
    per_pair=ThrottlePolicy(
        slow_after=3, lock_after=5, window=WINDOW, lock=WINDOW, first_delay=timedelta(seconds=0.3)
    ),
    per_address=ThrottlePolicy(
        slow_after=6, lock_after=8, window=WINDOW, lock=WINDOW, first_delay=timedelta(seconds=0.3)
    ),
)
_addresses = (f"198.51.100.{n}" for n in itertools.count(1))
NEW_KEY = {"name": "test program", "scopes": ["users", "messages:send", "messages:read"]}


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Settings]:
    """Settings on a schema of this module's own."""
    with module_settings(tmp_path_factory, database_url, "auth") as settings:
        yield settings


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    """The API's clock: it stands still until a test moves it."""
    return ManualClock()


@pytest.fixture(scope="module")
def deps(here: Settings, database_url: str, clock: ManualClock) -> Iterator[HttpDeps]:
    with http_deps(here, database_url, clock=clock) as opened:
        yield dataclasses.replace(
            with_cheap_passwords(opened),
            login_throttling=THROTTLING,
            trusted_proxies=("127.0.0.1",),  # the tests' own proxy: X-Forwarded-For
        )


@pytest.fixture(scope="module")
def acme(deps: HttpDeps) -> Tenant:
    return make_tenant(deps, "Acme")


@pytest.fixture(scope="module")
def staff(deps: HttpDeps) -> dict[Role, str]:
    return add_staff(deps)


@pytest.fixture(scope="module")
def base_url(deps: HttpDeps) -> Iterator[str]:
    with serving(create_app(deps)) as url:
        yield url


@pytest.fixture
def address() -> str:
    """A client address of the test's own (the app trusts X-Forwarded-For from 127.0.0.1),
    so that no test's failures count against another's."""
    return next(_addresses)


@pytest.fixture
def client(base_url: str, address: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=base_url, timeout=20, headers={"X-Forwarded-For": address}
    ) as client:
        yield client


@pytest.fixture
def raw(database_url: str, here: Settings) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(here.database_schema)))
        yield conn


@pytest.fixture
def new_user(deps: HttpDeps, acme: Tenant) -> Callable[[], str]:
    """Adds a fresh user of Acme; its login."""

    def add() -> str:
        login = f"user-{uuid.uuid4().hex[:8]}"
        add_customer_user(
            deps.accounts,
            customer_id=acme.customer_id,
            login=login,
            role=Role.CUSTOMER_USER,
            password=PASSWORD,
        )
        return login

    return add


def _log_in(client: httpx.Client, login: str, password: str = PASSWORD) -> httpx.Response:
    return client.post("/v1/sessions", json={"login": login, "password": password})


def _cookie_attributes(response: httpx.Response) -> dict[str, str]:
    header = next(
        h for h in response.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "=")
    )
    attributes = {}
    for part in header.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        attributes[name.lower()] = value
    return attributes


def _assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


# ---------------------------------------------------------------- sessions


def test_logging_in_says_who_the_caller_is_and_sets_an_http_only_same_site_cookie(
    client: httpx.Client, acme: Tenant
) -> None:
    response = _log_in(client, acme.admin_login)

    assert response.status_code == 201, response.text
    assert response.json() == {
        "user_id": str(acme.admin_id),
        "role": "customer_admin",
        "customer_id": str(acme.customer_id),
    }
    attributes = _cookie_attributes(response)
    assert "httponly" in attributes
    assert attributes["samesite"].lower() in ("lax", "strict")
    assert attributes["path"] == "/"
    assert "secure" not in attributes  # plain HTTP: a Secure cookie would never come back
    assert client.get("/v1/customers").status_code == 200


def test_over_tls_the_session_cookie_is_secure(
    here: Settings, database_url: str, tmp_path: Path, acme: Tenant, address: str
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with (
        http_deps(here, database_url, secure=True) as secure_deps,
        serving(create_app(secure_deps), cert=cert, key=key) as url,
        httpx.Client(base_url=url, verify=False, headers={"X-Forwarded-For": address}) as client,
    ):
        assert url.startswith("https://")
        response = _log_in(client, acme.user_login)

        assert response.status_code == 201, response.text
        assert "secure" in _cookie_attributes(response)
        assert "httponly" in _cookie_attributes(response)


def test_logging_out_ends_the_session_on_the_server_and_clears_the_cookie(
    client: httpx.Client, acme: Tenant, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    token = _log_in(client, acme.user_login).cookies[SESSION_COOKIE]

    response = client.delete("/v1/sessions")

    assert response.status_code == 204
    assert _cookie_attributes(response)["max-age"] == "0"
    replayed = httpx.get(
        f"{client.base_url}/v1/customers", cookies={SESSION_COOKIE: token}, timeout=20
    )
    _assert_problem(replayed, 401, "unauthorized")
    digest = hashlib.sha256(token.encode()).digest()
    gone = raw.execute("SELECT count(*) FROM http_sessions WHERE token_hash = %s", (digest,))
    assert gone.fetchone() == (0,)


def test_a_wrong_password_is_refused_with_problem_json_and_no_cookie(
    client: httpx.Client, acme: Tenant
) -> None:
    response = _log_in(client, acme.admin_login, "not the password at all")

    _assert_problem(response, 401, "authentication-failed")
    assert SESSION_COOKIE not in response.cookies


def test_an_expired_session_is_refused_and_purged(
    client: httpx.Client,
    deps: HttpDeps,
    acme: Tenant,
    clock: ManualClock,
    raw: psycopg.Connection[tuple[object, ...]],
) -> None:
    assert _log_in(client, acme.user_login).status_code == 201
    assert client.get("/v1/customers").status_code == 200

    clock.advance(SESSION_LIFETIME + timedelta(seconds=1))

    _assert_problem(client.get("/v1/customers"), 401, "unauthorized")
    deps.auth_store.purge_expired(clock.now())
    assert raw.execute(
        "SELECT count(*) FROM http_sessions WHERE expires_at <= %s", (clock.now(),)
    ).fetchone() == (0,)


def test_anonymous_api_requests_get_401_and_page_requests_go_to_the_login_page(
    client: httpx.Client,
) -> None:
    for path in ("/v1/customers", "/v1/traffic", f"/v1/messages/{uuid.uuid4()}"):
        response = client.get(path)
        _assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
    page = client.get("/admin/", follow_redirects=False)
    assert page.status_code == 302
    assert page.headers["location"] == "/login"
    assert client.get("/health").status_code == 200
    assert client.get("/schema/openapi.json").status_code == 200
    made_up = client.get("/v1/customers", headers={"Authorization": "Bearer pk_0_nothing"})
    _assert_problem(made_up, 401, "unauthorized")


def test_a_changing_request_with_the_session_cookie_from_another_site_is_refused(
    client: httpx.Client, acme: Tenant
) -> None:
    _log_in(client, acme.admin_login)

    foreign = client.post("/v1/api-keys", json=NEW_KEY, headers={"Origin": "https://evil.example"})
    sibling = client.post("/v1/api-keys", json=NEW_KEY, headers={"Sec-Fetch-Site": "same-site"})
    own = client.post(
        "/v1/api-keys", json=NEW_KEY, headers={"Origin": str(client.base_url).rstrip("/")}
    )

    _assert_problem(foreign, 403, "forbidden")
    _assert_problem(sibling, 403, "forbidden")
    assert own.status_code == 201, own.text


def test_a_login_posted_from_another_site_is_refused(client: httpx.Client, acme: Tenant) -> None:
    response = client.post(
        "/v1/sessions",
        json={"login": acme.user_login, "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )

    _assert_problem(response, 403, "forbidden")
    assert SESSION_COOKIE not in response.cookies


def test_logging_in_again_ends_the_session_the_browser_had(
    client: httpx.Client, new_user: Callable[[], str], deps: HttpDeps,
    raw: psycopg.Connection[tuple[object, ...]],
) -> None:  # fmt: skip
    login = new_user()
    user_id = deps.accounts.user_by_login(login).id

    first = _log_in(client, login).cookies[SESSION_COOKIE]
    second = _log_in(client, login).cookies[SESSION_COOKIE]

    assert first != second
    rows = raw.execute("SELECT token_hash FROM http_sessions WHERE user_id = %s", (user_id,))
    assert rows.fetchall() == [(hashlib.sha256(second.encode()).digest(),)]


def test_a_password_change_ends_the_users_other_sessions_but_the_callers_own(
    base_url: str, new_user: Callable[[], str], deps: HttpDeps
) -> None:
    """Finding 5: API keys stay valid until revoked, and the response says so."""
    login = new_user()
    browsers = [httpx.Client(base_url=base_url, timeout=20) for _ in range(3)]
    for browser in browsers:
        assert _log_in(browser, login).status_code == 201
    mine, other, third = browsers
    key = mine.post("/v1/api-keys", json=NEW_KEY).json()["key"]
    new_password = "violet anchor gravel 93"

    changed = mine.post(
        "/v1/me/password", json={"current_password": PASSWORD, "new_password": new_password}
    )

    assert changed.status_code == 200, changed.text
    assert changed.json()["sessions_ended"] == 2
    assert "API keys stay valid until revoked" in changed.json()["api_keys"]
    assert mine.get("/v1/customers").status_code == 200
    assert other.get("/v1/customers").status_code == 401
    assert third.get("/v1/customers").status_code == 401
    bearer = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{base_url}/v1/customers", headers=bearer).status_code == 200
    # A reset by link: the user's every session ends (the link's holder has none here).
    token = deps.accounts.reset_password(login).token
    done = httpx.post(f"{base_url}/v1/password-links/{token}", json={"new_password": PASSWORD})
    assert done.status_code == 200 and done.json()["sessions_ended"] == 1
    assert mine.get("/v1/customers").status_code == 401
    for browser in browsers:
        browser.close()


# ---------------------------------------------------------------- API keys


def test_an_api_key_is_shown_once_works_as_bearer_and_stops_working_once_revoked(
    client: httpx.Client, base_url: str, acme: Tenant
) -> None:
    _log_in(client, acme.admin_login)
    created = client.post("/v1/api-keys", json=NEW_KEY)
    assert created.status_code == 201, created.text
    key_id, key = created.json()["id"], created.json()["key"]
    assert key.startswith(f"pk_{UUID(key_id).hex}_")
    program = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"})

    shown = program.get(f"/v1/customers/{acme.customer_id}")
    revoked = program.delete(f"/v1/api-keys/{key_id}")
    after = program.get(f"/v1/customers/{acme.customer_id}")

    assert shown.status_code == 200
    assert shown.json()["organisation"] == acme.organisation
    assert revoked.status_code == 204
    _assert_problem(after, 401, "unauthorized")
    tampered = program.get("/v1/customers", headers={"Authorization": f"Bearer {key[:-1]}x"})
    _assert_problem(tampered, 401, "unauthorized")


def test_an_api_key_is_stored_only_as_a_sealed_hash(
    client: httpx.Client, acme: Tenant, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    _log_in(client, acme.admin_login)
    key = client.post("/v1/api-keys", json=NEW_KEY).json()["key"]
    secret = key.split("_", 2)[2]
    digest = hashlib.sha256(secret.encode()).hexdigest()

    stored = _every_stored_byte(raw)

    assert secret.encode() not in stored
    assert digest.encode() not in stored


def test_only_its_owner_or_a_platform_admin_can_revoke_a_key(
    base_url: str, deps: HttpDeps, acme: Tenant, staff: dict[Role, str]
) -> None:
    owner = deps.accounts.user(acme.admin_id)
    issued = deps.api_keys.issue(user_id=owner.id, customer_id=owner.customer_id)
    colleague = _bearer_client(base_url, deps, acme.user_login)
    support = _bearer_client(base_url, deps, staff[Role.SUPPORT])
    admin = _bearer_client(base_url, deps, staff[Role.PLATFORM_ADMIN])

    _assert_problem(colleague.delete(f"/v1/api-keys/{issued.id}"), 404, "not-found")
    _assert_problem(support.delete(f"/v1/api-keys/{issued.id}"), 404, "not-found")
    assert admin.delete(f"/v1/api-keys/{issued.id}").status_code == 204
    key_holder = httpx.get(
        f"{base_url}/v1/customers", headers={"Authorization": f"Bearer {issued.key}"}
    )
    _assert_problem(key_holder, 401, "unauthorized")


def test_a_disabled_users_session_and_keys_stop_working(
    client: httpx.Client, base_url: str, deps: HttpDeps, new_user: Callable[[], str]
) -> None:
    login = new_user()
    _log_in(client, login)
    program = _bearer_client(base_url, deps, login)
    assert client.get("/v1/customers").status_code == 200
    assert program.get("/v1/customers").status_code == 200

    deps.accounts.disable_user(login)

    _assert_problem(client.get("/v1/customers"), 401, "unauthorized")
    _assert_problem(program.get("/v1/customers"), 401, "unauthorized")
    again = _log_in(client, login)
    assert again.status_code in (401, 409) and SESSION_COOKIE not in again.cookies


# ---------------------------------------------------------------- throttling


def test_wrong_passwords_from_many_addresses_do_not_lock_out_the_owner(
    base_url: str, new_user: Callable[[], str], clock: ManualClock
) -> None:
    """Issue 11.4: five wrong passwords from five addresses locked `admin` for 15 minutes."""
    login = new_user()
    policy = THROTTLING.per_account

    def attempt(password: str = "wrong password!") -> httpx.Response:
        # Each from another address: only the account's own count can stop them.
        return httpx.post(
            f"{base_url}/v1/sessions",
            json={"login": login, "password": password},
            headers={"X-Forwarded-For": next(_addresses)},
            timeout=20,
        )

    for _ in range(5):
        _assert_problem(attempt(), 401, "authentication-failed")
    assert attempt(PASSWORD).status_code == 201  # the owner, from a sixth address

    for _ in range(policy.slow_after):
        _assert_problem(attempt(), 401, "authentication-failed")
    slowed = attempt(PASSWORD)  # too soon, even with the right password: slowed down
    _assert_problem(slowed, 429, "login-throttled")
    assert int(slowed.headers["retry-after"]) <= policy.max_delay.total_seconds()
    for _ in range(5):  # the attacker goes on as soon as it may: the wait never grows past max
        clock.advance(policy.max_delay)
        _assert_problem(attempt(), 401, "authentication-failed")
    clock.advance(policy.max_delay)
    assert attempt(PASSWORD).status_code == 201  # slowed, never locked


def test_by_default_an_account_is_slowed_only_after_more_than_five_failures_and_never_locked() -> (
    None
):
    policy = LoginThrottling().per_account
    assert policy.lock_after is None and policy.slow_after > 5
    assert policy.max_delay <= timedelta(minutes=1)


def test_an_account_failed_against_without_end_waits_the_longest_wait_and_no_longer() -> None:
    policy = LoginThrottling().per_account  # never locked: its failures may go on and on
    assert policy.wait_after(policy.slow_after) == policy.first_delay
    assert policy.wait_after(policy.slow_after + 1) == 2 * policy.first_delay
    for failures in (policy.slow_after + 60, 10_000):  # once overflowed a timedelta
        assert policy.wait_after(failures) == policy.max_delay


def test_wrong_passwords_from_one_address_lock_that_address_out_of_that_account_only(
    base_url: str, new_user: Callable[[], str], address: str, clock: ManualClock
) -> None:
    login = new_user()
    policy = THROTTLING.per_pair

    def attempt(password: str = "wrong password!", at: str = address) -> httpx.Response:
        return httpx.post(
            f"{base_url}/v1/sessions",
            json={"login": login, "password": password},
            headers={"X-Forwarded-For": at},
            timeout=20,
        )

    for _ in range(policy.slow_after):
        _assert_problem(attempt(), 401, "authentication-failed")
    _assert_problem(attempt(PASSWORD), 429, "login-throttled")
    clock.advance(policy.first_delay)
    _assert_problem(attempt(), 401, "authentication-failed")  # failure 4: wait twice as long
    _assert_problem(attempt(), 429, "login-throttled")
    clock.advance(2 * policy.first_delay)
    _assert_problem(attempt(), 401, "authentication-failed")  # failure 5: locked

    locked = attempt(PASSWORD)
    elsewhere = attempt(PASSWORD, at=next(_addresses))

    _assert_problem(locked, 429, "login-throttled")
    lock = policy.lock.total_seconds()
    assert lock - 60 <= int(locked.headers["retry-after"]) <= lock
    assert elsewhere.status_code == 201, elsewhere.text  # an address that has not failed


def test_a_forwarded_header_from_a_peer_that_is_no_trusted_proxy_is_ignored(
    deps: HttpDeps, new_user: Callable[[], str]
) -> None:
    """Every spoofed X-Forwarded-For used to get a bucket of its own."""
    login = new_user()
    untrusted = dataclasses.replace(deps, trusted_proxies=())
    with serving(create_app(untrusted)) as url:

        def attempt(password: str = "wrong password!") -> httpx.Response:
            spoofed = next(_addresses)
            return httpx.post(
                f"{url}/v1/sessions",
                json={"login": login, "password": password},
                headers={"X-Forwarded-For": spoofed, "Forwarded": f"for={spoofed}"},
                timeout=20,
            )

        for _ in range(THROTTLING.per_pair.slow_after):
            _assert_problem(attempt(), 401, "authentication-failed")
        # All from 127.0.0.1, whatever they claim: its pair with the account is slowed.
        _assert_problem(attempt(PASSWORD), 429, "login-throttled")


def test_failures_from_one_address_are_slowed_then_locked_for_every_account(
    base_url: str, acme: Tenant, address: str, clock: ManualClock
) -> None:
    policy = THROTTLING.per_address

    def attempt(login: str, password: str = "wrong password!", at: str = address) -> httpx.Response:
        return httpx.post(
            f"{base_url}/v1/sessions",
            json={"login": login, "password": password},
            headers={"X-Forwarded-For": at},
            timeout=20,
        )

    for n in range(policy.slow_after):  # each against another account
        _assert_problem(attempt(f"nobody-{n}-{uuid.uuid4().hex[:6]}"), 401, "authentication-failed")
    _assert_problem(attempt(acme.user_login, PASSWORD), 429, "login-throttled")
    clock.advance(policy.first_delay)
    _assert_problem(attempt("nobody-x"), 401, "authentication-failed")
    clock.advance(2 * policy.first_delay)
    _assert_problem(attempt("nobody-y"), 401, "authentication-failed")  # the lock

    locked = attempt(acme.user_login, PASSWORD)
    elsewhere = attempt(acme.user_login, PASSWORD, at=next(_addresses))

    _assert_problem(locked, 429, "login-throttled")
    assert int(locked.headers["retry-after"]) > 60
    assert elsewhere.status_code == 201  # the account itself is not locked


def test_an_ipv6_client_is_counted_by_its_slash_64(deps: HttpDeps) -> None:
    from picasse.adapters.http.auth import address_block

    assert address_block("2001:db8:1:2::1") == address_block("2001:db8:1:2:ffff::9")
    assert address_block("2001:db8:1:2::1") != address_block("2001:db8:1:3::1")
    assert address_block("::ffff:192.0.2.1") == "192.0.2.1"


# ---------------------------------------------------------------- R6


def test_without_login_tracking_nothing_records_who_logged_in_when(
    client: httpx.Client,
    deps: HttpDeps,
    new_user: Callable[[], str],
    raw: psycopg.Connection[tuple[object, ...]],
    here: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    login = new_user()
    user_id = deps.accounts.user_by_login(login).id
    tables_before = _tables(raw, here.database_schema)
    counters_before = raw.execute("SELECT key FROM login_throttle").fetchall()
    head_before = deps.messages.recorder.max_notification_id()

    with caplog.at_level(logging.DEBUG):
        _log_in(client, login)
        client.get("/v1/customers")
        client.delete("/v1/sessions")
        _log_in(client, login)

    assert deps.messages.recorder.max_notification_id() == head_before  # no event
    assert _tables(raw, here.database_schema) == tables_before
    assert not any("login" in table for table in tables_before - {"login_throttle"})
    sessions = raw.execute(
        "SELECT user_id, expires_at > %s FROM http_sessions", (deps.clock.now(),)
    ).fetchall()
    assert sessions.count((user_id, True)) == 1  # the live session, and nothing of the first
    # Only this user's: sessions of other tests expire when the expiry test moves the clock.
    assert all(live for user, live in sessions if user == user_id)
    # Successful logins leave no counter behind, neither for the account nor the address.
    assert raw.execute("SELECT key FROM login_throttle").fetchall() == counters_before
    assert not [r for r in caplog.records if r.name.startswith("picasse")]
    said = " ".join(record.getMessage() for record in caplog.records)
    assert login not in said and str(user_id) not in said


def test_with_login_tracking_on_each_login_is_recorded(
    settings: Settings, schema: str, database_url: str
) -> None:
    here = msgspec.structs.replace(settings, database_schema=schema)
    with http_deps(here, database_url) as opened:
        deps = dataclasses.replace(with_cheap_passwords(opened), login_tracking=True)
        user_id = deps.accounts.add_user(
            customer_id=None, login="tracked-admin", role=Role.PLATFORM_ADMIN, password=PASSWORD
        )
        with serving(create_app(deps)) as url:
            response = httpx.post(
                f"{url}/v1/sessions", json={"login": "tracked-admin", "password": PASSWORD}
            )
    assert response.status_code == 201
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            sql.SQL("SELECT user_id, via FROM {}").format(sql.Identifier(schema, "login_records"))
        ).fetchall()
    assert rows == [(user_id, "session")]


# ---------------------------------------------------------------- helpers


def _bearer_client(base_url: str, deps: HttpDeps, login: str) -> httpx.Client:
    user = deps.accounts.user_by_login(login)
    issued = deps.api_keys.issue(user_id=user.id, customer_id=user.customer_id)
    return httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {issued.key}"}, timeout=20
    )


def _tables(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    ).fetchall()
    return {str(name) for (name,) in rows}


def _every_stored_byte(conn: psycopg.Connection[tuple[object, ...]]) -> bytes:
    """Every value of every table in the schema, as bytes, to search for plaintext."""
    schema = conn.execute("SELECT current_schema()").fetchone()
    assert schema is not None
    chunks = []
    for table in _tables(conn, str(schema[0])):
        for row in conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))):
            for value in row:
                if isinstance(value, bytes | memoryview):
                    chunks.append(bytes(value))
                elif value is not None:
                    chunks.append(str(value).encode())
    return b"\n".join(chunks)
