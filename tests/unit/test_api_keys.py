"""API keys in memory: shown once, checked by hash, revoked by their owner or an admin."""

from __future__ import annotations

from uuid import UUID, uuid4

import msgspec
import pytest
from eventsourcing.persistence import StoredEvent

from picasse.adapters.clock import ManualClock
from picasse.adapters.crypto import MemoryKeyRing, SealingMapper
from picasse.domain.access import Viewer
from picasse.domain.api_keys import ALL_SCOPES, ApiKey, ApiKeys, MissingScope, Scope, hash_of_secret
from picasse.domain.errors import AuthenticationFailed, InvalidInput, NotFound
from picasse.domain.users import PLATFORM_TENANT
from picasse.domain.values import Role

CUSTOMER = uuid4()


class InMemoryApiKeys(ApiKeys):
    mapper: SealingMapper  # what construct_mapper makes (the library types it as any mapper)

    def __init__(self) -> None:
        self.ring = MemoryKeyRing()
        super().__init__({"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=ManualClock())

    def construct_mapper(self) -> SealingMapper:
        return SealingMapper(keys=self.ring)


@pytest.fixture
def keys() -> InMemoryApiKeys:
    return InMemoryApiKeys()


def _viewer(user_id: UUID, role: Role = Role.CUSTOMER_USER) -> Viewer:
    return Viewer(role=role, customer_id=None if role.is_platform else CUSTOMER, user_id=user_id)


def test_an_issued_key_names_its_holder_and_keeps_only_a_hash(keys: InMemoryApiKeys) -> None:
    user = uuid4()

    issued = keys.issue(user_id=user, customer_id=CUSTOMER)

    assert issued.key.startswith(f"pk_{issued.id.hex}_")
    assert keys.authenticate(issued.key).user_id == user
    stored: ApiKey = keys.repository.get(issued.id)
    secret = issued.key.split("_", 2)[2]
    assert stored.secret_hash == hash_of_secret(secret) != secret
    assert issued.key not in repr(issued) and issued.key not in str(issued)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pk_",
        "pk_nothex_secret",
        f"pk_{'1' * 32}_",
        f"sk_{'2' * 32}_x",
        f"pk_{'3' * 32}_x",
    ],
)
def test_text_that_is_not_a_key_of_ours_fails(keys: InMemoryApiKeys, text: str) -> None:
    with pytest.raises(AuthenticationFailed):
        keys.authenticate(text)


def test_a_key_with_a_changed_secret_fails(keys: InMemoryApiKeys) -> None:
    issued = keys.issue(user_id=uuid4(), customer_id=CUSTOMER)

    with pytest.raises(AuthenticationFailed):
        keys.authenticate(issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B"))


def test_the_owner_revokes_a_key_and_it_stops_working_and_revoking_again_is_harmless(
    keys: InMemoryApiKeys,
) -> None:
    owner = uuid4()
    issued = keys.issue(user_id=owner, customer_id=CUSTOMER)

    keys.revoke(issued.id, by=_viewer(owner))
    keys.revoke(issued.id, by=_viewer(owner))

    with pytest.raises(AuthenticationFailed):
        keys.authenticate(issued.key)
    assert keys.repository.get(issued.id).version == 3  # Issued, Named, one Revoked


def test_the_customers_admin_revokes_its_users_keys_another_customers_admin_cannot(
    keys: InMemoryApiKeys,
) -> None:
    issued = keys.issue(user_id=uuid4(), customer_id=CUSTOMER)
    stranger = Viewer(role=Role.CUSTOMER_ADMIN, customer_id=uuid4(), user_id=uuid4())

    with pytest.raises(NotFound):
        keys.revoke(issued.id, by=stranger)
    keys.revoke(issued.id, by=_viewer(uuid4(), Role.CUSTOMER_ADMIN))

    with pytest.raises(AuthenticationFailed):
        keys.authenticate(issued.key)


@pytest.mark.parametrize("role", [Role.CUSTOMER_USER, Role.SUPPORT, Role.AUDITOR])
def test_to_anyone_but_its_owner_its_customers_admin_or_a_platform_admin_a_key_does_not_exist(
    keys: InMemoryApiKeys, role: Role
) -> None:
    issued = keys.issue(user_id=uuid4(), customer_id=CUSTOMER)

    with pytest.raises(NotFound):
        keys.revoke(issued.id, by=_viewer(uuid4(), role))

    assert keys.authenticate(issued.key)


def test_a_platform_admin_revokes_anyones_key(keys: InMemoryApiKeys) -> None:
    issued = keys.issue(user_id=uuid4(), customer_id=CUSTOMER)

    keys.revoke(issued.id, by=_viewer(uuid4(), Role.PLATFORM_ADMIN))

    with pytest.raises(AuthenticationFailed):
        keys.authenticate(issued.key)


def test_erasing_the_user_leaves_no_key_of_theirs_that_works(keys: InMemoryApiKeys) -> None:
    user = uuid4()
    issued = keys.issue(user_id=user, customer_id=None)  # staff: the platform tenant

    keys.ring.destroy_subject(PLATFORM_TENANT, f"user/{user}")

    with pytest.raises(AuthenticationFailed):
        keys.authenticate(issued.key)


# ---------------------------------------------------------------- names and scopes


def test_a_key_holds_its_name_and_the_scopes_it_was_given(keys: InMemoryApiKeys) -> None:
    issued = keys.issue(
        user_id=uuid4(), customer_id=CUSTOMER, name="  nightly   sender ", scopes=["messages:send"]
    )

    stored: ApiKey = keys.repository.get(issued.id)
    assert stored.name == "nightly sender"
    assert keys.authenticate(issued.key).scopes == {Scope.MESSAGES_SEND}


@pytest.mark.parametrize(
    ("scopes", "name", "field"),
    [(["messages:send", "admin"], "ok", "scopes"), ([], "ok", "scopes"), (["users"], " ", "name")],
)
def test_an_unknown_scope_no_scope_or_an_empty_name_is_refused(
    keys: InMemoryApiKeys, scopes: list[str], name: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        keys.issue(user_id=uuid4(), customer_id=CUSTOMER, name=name, scopes=scopes)
    assert refused.value.field == field


def test_a_key_cannot_issue_a_key_broader_than_itself(keys: InMemoryApiKeys) -> None:
    narrow = frozenset({Scope.USERS, Scope.MESSAGES_READ})

    with pytest.raises(MissingScope):
        keys.issue(user_id=uuid4(), customer_id=CUSTOMER, scopes=["messages:send"], within=narrow)
    issued = keys.issue(user_id=uuid4(), customer_id=CUSTOMER, scopes=["users"], within=narrow)
    assert keys.authenticate(issued.key).scopes == {Scope.USERS}


def test_a_key_issued_before_scopes_existed_reads_as_holding_every_scope(
    keys: InMemoryApiKeys,
) -> None:
    issued = keys.issue(user_id=uuid4(), customer_id=CUSTOMER, scopes=["users"])
    [first, *_] = keys.recorder.select_events(issued.id)
    state = msgspec.msgpack.decode(first.state)
    del state["scopes"], state["class_version"]  # as version 1 stored it
    old = StoredEvent(first.originator_id, 1, first.topic, keys.mapper.encode(state))

    assert keys.mapper.to_domain_event(old).scopes == sorted(s.value for s in ALL_SCOPES)
