"""Connection admission: caps per address and in all (sans-IO)."""

from __future__ import annotations

from trio_chat.admission import MAX_TRACKED_ADDRESSES, Admission, address_key
from trio_chat.limits import Limits

A, B = "127.0.0.2", "127.0.0.3"


def test_per_address_cap_leaves_other_addresses_alone() -> None:
    admission = Admission(Limits(max_per_address=10, max_unregistered_per_address=0))
    for _ in range(10):
        assert admission.admit(A, 0.0) is None
    refusal = admission.admit(A, 0.0)
    assert refusal is not None and refusal.code == "too-many-from-address"
    assert admission.admit(B, 0.0) is None
    admission.released(A, registered=False)
    assert admission.admit(A, 0.0) is None


def test_global_cap() -> None:
    admission = Admission(
        Limits(
            max_connections=30,
            max_per_address=0,
            max_new_per_minute=0,
            max_unregistered=0,
            max_unregistered_per_address=0,
        )
    )
    for number in range(30):
        assert admission.admit(f"10.0.0.{number}", 0.0) is None
    refusal = admission.admit("10.0.1.1", 0.0)
    assert refusal is not None and refusal.code == "too-many-connections"


def test_new_connections_per_minute() -> None:
    admission = Admission(
        Limits(max_new_per_minute=20, max_per_address=0, max_unregistered_per_address=0)
    )
    for second in range(20):
        assert admission.admit(A, float(second)) is None
        admission.released(A, registered=True)
    refusal = admission.admit(A, 20.0)
    assert refusal is not None and refusal.code == "too-many-new-connections"
    # The refusal says when the window has room again: when its oldest
    # attempt (at 1 s: the one at 0 s made way for the refused one) is out.
    assert refusal.retry_after == 41
    assert admission.admit(B, 20.0) is None
    # A minute after the first attempts, the window has room again.
    assert admission.admit(A, 61.0) is None


def test_unregistered_caps_free_up_on_registration() -> None:
    admission = Admission(Limits(max_unregistered_per_address=2, max_unregistered=3))
    assert admission.admit(A, 0.0) is None
    assert admission.admit(A, 0.0) is None
    refusal = admission.admit(A, 0.0)
    assert refusal is not None and refusal.code == "too-many-unregistered"
    admission.registered(A)
    assert admission.admit(A, 0.0) is None
    assert admission.admit(B, 0.0) is None
    refusal = admission.admit(B, 0.0)
    assert refusal is not None and refusal.code == "too-many-unregistered"
    assert admission.unregistered == 3 and admission.open == 4


def test_counts_return_to_zero() -> None:
    admission = Admission(Limits())
    assert admission.admit(A, 0.0) is None
    admission.registered(A)
    assert admission.admit(A, 0.0) is None
    admission.released(A, registered=True)
    admission.released(A, registered=False)
    admission.released(A, registered=False)  # one too many: ignored
    assert (admission.open, admission.unregistered) == (0, 0)


def test_switched_off_caps_admit_everything() -> None:
    admission = Admission(
        Limits(
            max_connections=0,
            max_per_address=0,
            max_new_per_minute=0,
            max_unregistered=0,
            max_unregistered_per_address=0,
        )
    )
    assert all(admission.admit(A, 0.0) is None for _ in range(5000))
    assert admission.tracked == 1


def test_forgotten_addresses_keep_the_table_bounded() -> None:
    admission = Admission(Limits(max_per_address=0, max_unregistered_per_address=0))
    for number in range(MAX_TRACKED_ADDRESSES + 100):
        key = f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"
        if admission.admit(key, 0.0) is None:
            admission.released(key, registered=True)
    assert admission.tracked <= MAX_TRACKED_ADDRESSES + 1


def test_address_keys() -> None:
    assert address_key("127.0.0.2") == "127.0.0.2"
    assert address_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert (
        address_key("2001:db8::1") == address_key("2001:db8::ffff") == ("2001:db8::/64")
    )
    assert address_key("2001:db8:0:1::1") != address_key("2001:db8::1")
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("not an address") == "not an address"
