"""Counting failed attempts per message for classic queues, and the broker's count."""

from __future__ import annotations

from triggerd_rabbitmq.attempts import RedeliveryCounter, counter_key, delivery_count


def test_first_delivery_starts_at_zero_and_clears_a_stale_count() -> None:
    c = RedeliveryCounter()
    c.failed("id:a")
    assert c.attempts("id:a", redelivered=False, broker_count=0) == 0
    assert c.get("id:a") == 0


def test_nacks_are_counted_for_redeliveries() -> None:
    c = RedeliveryCounter()
    assert c.failed("id:a") == 1
    assert c.failed("id:a") == 2
    assert c.attempts("id:a", redelivered=True, broker_count=0) == 2


def test_broker_count_wins_when_higher_and_floors_the_next_failure() -> None:
    c = RedeliveryCounter()
    assert c.attempts("id:a", redelivered=True, broker_count=3) == 3
    assert c.failed("id:a", at_least=4) == 4


def test_forget_and_capacity_bound_the_memory() -> None:
    c = RedeliveryCounter(capacity=2)
    c.failed("a")
    c.failed("b")
    c.failed("a")  # touched: now the newest
    c.failed("c")  # evicts "b", the least recently touched
    assert (c.get("a"), c.get("b"), c.get("c")) == (2, 0, 1)
    c.forget("a")
    assert len(c) == 1


def test_counter_key_uses_the_message_id_or_a_digest() -> None:
    assert counter_key("m-1", b"x", "q") == "id:m-1"
    assert counter_key(None, b"x", "q") == counter_key("", b"x", "q")
    assert counter_key(None, b"x", "q") != counter_key(None, b"y", "q")


def test_delivery_count_reads_only_a_valid_header() -> None:
    assert delivery_count({"x-delivery-count": 2}) == 2
    assert delivery_count({"x-delivery-count": "2"}) == 0
    assert delivery_count({"x-delivery-count": True}) == 0
    assert delivery_count({"x-delivery-count": -1}) == 0
    assert delivery_count(None) == 0
