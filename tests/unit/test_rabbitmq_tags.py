"""Coalescing acks: one multiple-ack for the oldest run of outstanding tags being acked."""

from __future__ import annotations

from triggerd_rabbitmq.tags import Outstanding


def delivered(*tags: int) -> Outstanding:
    o = Outstanding()
    for tag in tags:
        o.delivered(tag)
    return o


def test_acking_the_oldest_run_is_one_multiple_ack() -> None:
    o = delivered(1, 2, 3, 4, 5)
    assert o.plan_ack([3, 1, 2]) == (3, [])
    assert len(o) == 2


def test_a_tag_held_by_another_batch_stops_the_run() -> None:
    o = delivered(1, 2, 3, 4, 5)
    assert o.plan_ack([1, 2, 4, 5]) == (2, [4, 5])
    assert o.plan_ack([3]) == (3, []), "4 and 5 were already settled one by one"
    assert len(o) == 0


def test_a_later_batch_finishing_first_is_acked_one_by_one() -> None:
    o = delivered(1, 2, 3, 4)
    assert o.plan_ack([3, 4]) == (None, [3, 4])
    assert o.plan_ack([1, 2]) == (2, [])
    assert len(o) == 0


def test_nacked_tags_do_not_block_a_later_multiple_ack() -> None:
    o = delivered(1, 2, 3)
    o.settle([1])
    assert o.plan_ack([2, 3]) == (3, [])


def test_unreceived_deliveries_block_the_run() -> None:
    o = delivered(1, 2, 3)
    assert o.plan_ack([2]) == (None, [2])
    assert len(o) == 2
