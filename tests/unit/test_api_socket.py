"""The API's listening socket: bound with one clear error, or inherited from `up`."""

from __future__ import annotations

import os
import socket

import pytest

from picasse.runners import listening
from picasse.runners.settings import Settings, SettingsError


def test_up_names_the_socket_it_hands_the_api_in_one_setting() -> None:
    assert Settings.from_environ({"PICASSE_HTTP_LISTEN_FD": "7"}).http_listen_fd == 7
    assert Settings.from_environ({}).http_listen_fd is None  # `picasse api` binds its own


@pytest.mark.parametrize("bad", ["seven", "-1", "3.0"])
def test_a_listen_descriptor_that_is_no_descriptor_is_refused(bad: str) -> None:
    with pytest.raises(SettingsError, match="PICASSE_HTTP_LISTEN_FD"):
        Settings.from_environ({"PICASSE_HTTP_LISTEN_FD": bad})


def test_a_taken_port_is_one_line_naming_host_and_port() -> None:
    with listening.bind("127.0.0.1", 0) as taken:
        port = listening.port_of(taken)
        with pytest.raises(SettingsError) as refused:
            listening.bind("127.0.0.1", port)

    assert str(refused.value) == f"cannot listen on 127.0.0.1:{port}: Address already in use"


def test_an_inherited_socket_listens_where_it_was_bound_and_is_tcp_for_nodelay() -> None:
    with listening.bind("127.0.0.1", 0) as bound:
        inherited = listening.inherited(os.dup(bound.fileno()))
        with inherited:
            assert listening.address(inherited) == listening.address(bound)
            # asyncio sets TCP_NODELAY only on sockets whose protocol says TCP.
            assert inherited.proto == socket.IPPROTO_TCP
            with socket.create_connection(inherited.getsockname()[:2], timeout=5):
                accepted, _ = inherited.accept()
                accepted.close()


def test_a_descriptor_that_does_not_listen_is_refused_and_left_to_its_owner() -> None:
    with socket.socket() as idle:
        with pytest.raises(SettingsError, match="no listening TCP socket"):
            listening.inherited(idle.fileno())

        assert idle.fileno() >= 0
        os.fstat(idle.fileno())  # still open


def test_a_descriptor_that_is_no_socket_is_refused() -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(SettingsError, match="PICASSE_HTTP_LISTEN_FD"):
            listening.inherited(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
