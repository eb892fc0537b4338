"""Customer and User aggregates: guards raise before any event, events only change state."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing
from uuid import uuid4

import pytest
from eventsourcing.application import project_aggregate
from eventsourcing.domain import CommandMethodDecorator

import picasse.domain
import picasse.domain.customers
import picasse.domain.users
from picasse.adapters.crypto import MemoryKeyRing, SealingMapper, _Plain, _plan_for
from picasse.domain.aggregates import Aggregate
from picasse.domain.application import projected
from picasse.domain.customers import Contact, Customer, Subscription
from picasse.domain.errors import AlreadyTerminated, Conflict, UserDisabled
from picasse.domain.users import User
from picasse.domain.values import EmailAddress, PhoneNumber, Role


def _customer() -> Customer:
    return Customer(
        organisation="Acme",
        contact=Contact("Bob", EmailAddress("b@example.com"), PhoneNumber("+31612345678")),
        billing_address="Street 1",
    )


def test_a_registered_customer_has_no_subscription_until_one_is_started() -> None:
    customer = _customer()
    assert customer.subscription is Subscription.REGISTERED
    customer.start_subscription("standard")
    # mypy keeps the narrowing above across the method call that changes the attribute.
    assert customer.subscription is Subscription.ACTIVE  # type: ignore[comparison-overlap]
    assert [type(e).__name__ for e in customer.collect_events()] == [
        "Registered",
        "SubscriptionStarted",
    ]


def test_a_second_active_subscription_on_another_plan_is_refused() -> None:
    customer = _customer()
    customer.start_subscription("standard")
    with pytest.raises(Conflict, match="plan standard"):
        customer.start_subscription("premium")


def test_starting_the_subscription_it_has_again_changes_nothing() -> None:
    customer = _customer()
    customer.start_subscription("standard")
    customer.collect_events()
    customer.start_subscription("standard")
    assert customer.collect_events() == []
    assert customer.plan == "standard"


def test_a_terminated_customer_refuses_changes_and_a_second_termination() -> None:
    customer = _customer()
    customer.terminate()
    customer.collect_events()
    with pytest.raises(AlreadyTerminated):
        customer.terminate()
    with pytest.raises(AlreadyTerminated):
        customer.change_contact(
            Contact("Al", EmailAddress("a@example.com"), PhoneNumber("+31612345679"))
        )
    assert customer.collect_events() == []


def test_changing_the_contact_to_the_same_contact_records_nothing() -> None:
    customer = _customer()
    customer.collect_events()
    customer.change_contact(customer.contact)
    assert customer.collect_events() == []


def test_a_disabled_user_cannot_change_password_and_can_be_enabled_again() -> None:
    user = User(tenant_id=uuid4(), login="bob", role=Role.CUSTOMER_USER, password_hash="h1")
    user.disable()
    with pytest.raises(UserDisabled):
        user.change_password("h2")
    with pytest.raises(Conflict):
        user.disable()
    user.enable()
    user.change_password("h2")
    assert user.password_hash == "h2"


def _event_classes() -> list[type]:
    found = []
    for module in (picasse.domain.customers, picasse.domain.users):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Aggregate) and value is not Aggregate:
                found += [
                    e
                    for e in vars(value).values()
                    if isinstance(e, type)
                    and dataclasses.is_dataclass(e)
                    and issubclass(e, Aggregate.Event)
                ]
    return found


@pytest.mark.parametrize("event_class", _event_classes(), ids=lambda c: c.__qualname__)
def test_every_event_class_can_be_sealed(event_class: type) -> None:
    plan = _plan_for(event_class)
    names = {f.name for f in dataclasses.fields(event_class)}
    if not all(isinstance(f, _Plain) for f in plan.fields):
        # Personal data needs a tenant: the event's tenant_id or its own id.
        assert "tenant_id" in names or event_class.__qualname__.startswith("Customer.")


def _declared_event_methods() -> list[CommandMethodDecorator]:
    """Every `@event(SomeClass)` method of the domain's aggregates: those whose event class
    is declared beside it rather than made from its signature."""
    for info in pkgutil.iter_modules(picasse.domain.__path__):
        importlib.import_module(f"picasse.domain.{info.name}")
    found, pending = [], list(Aggregate.__subclasses__())
    while pending:
        aggregate = pending.pop()
        pending += aggregate.__subclasses__()
        if aggregate.__module__.startswith("picasse.domain."):
            found += [
                value
                for value in vars(aggregate).values()
                if isinstance(value, CommandMethodDecorator) and value.given_event_cls is not None
            ]
    return found


@pytest.mark.parametrize(
    "method", _declared_event_methods(), ids=lambda m: m.decorated_func.__qualname__
)
def test_a_declared_event_class_has_the_parameters_of_its_method_annotated_alike(
    method: CommandMethodDecorator,
) -> None:
    """The mapper seals what the event class's annotations declare personal: a Personal(...)
    written on the method's parameter alone would be stored in plaintext."""
    func, event_class = method.decorated_func, method.given_event_cls
    params = list(inspect.signature(func).parameters)[1:]
    if func.__name__ == "__init__":
        params = [p for p in params if p != "id"]  # the aggregate's id, not a field
    assert dataclasses.is_dataclass(event_class)
    fields = [f.name for f in dataclasses.fields(event_class)]
    assert fields[len(fields) - len(params) :] == params
    event_hints = typing.get_type_hints(event_class, include_extras=True)
    method_hints = typing.get_type_hints(func, include_extras=True)
    assert {p: event_hints[p] for p in params} == {p: method_hints[p] for p in params}


def test_every_personal_field_of_user_events_is_sealed() -> None:
    mapper = SealingMapper(keys=MemoryKeyRing())
    user = User(
        tenant_id=uuid4(), login="zz-login-zz", role=Role.CUSTOMER_USER, password_hash="zz-hash-zz"
    )
    user.change_password("zz-new-hash-zz")
    for domain_event in user.collect_events():
        state = mapper.to_stored_event(domain_event).state
        assert b"zz-" not in state


def test_reading_an_aggregate_from_its_events_gives_what_the_librarys_projector_gives() -> None:
    """Reads replay events with `projected` (the library's projector without its slow
    Protocol check): the same aggregate, field for field, and None from no events."""
    customer = _customer()
    customer.start_subscription("standard")
    customer.change_billing_address("Quay 2")
    events = customer.collect_events()
    ours, theirs = projected(None, events), project_aggregate(None, events)
    assert vars(ours) == vars(theirs)
    assert ours.subscription is Subscription.ACTIVE and ours.version == 3
    assert ours.billing_address == "Quay 2"
    assert projected(None, []) is None
