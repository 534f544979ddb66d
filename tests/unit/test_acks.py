"""Which ack frames a batch of settled deliveries becomes: one ``multiple`` ack for the settled
prefix, single acks behind a gap, nothing for unknown, repeated or earlier-channel tags."""

from __future__ import annotations

import random

from taskell.transport.acks import TAG_BITS, Ack, AckBatcher, Reject


def delivered(batcher: AckBatcher, count: int) -> list[int]:
    """Deliveries 1..count on the batcher's channel; returns the tags handed out."""
    return [batcher.delivered(channel_tag) for channel_tag in range(1, count + 1)]


def test_a_settled_prefix_is_one_multiple_ack() -> None:
    batcher = AckBatcher(0)
    tags = delivered(batcher, 5)
    assert batcher.ack(tags[:3]) == [Ack(3, multiple=True)]
    assert batcher.unsettled == [4, 5]
    assert batcher.ack(tags[3:]) == [Ack(5, multiple=True)]
    assert batcher.unsettled == []


def test_a_prefix_of_one_is_a_single_ack() -> None:
    batcher = AckBatcher(0)
    tags = delivered(batcher, 3)
    assert batcher.ack([tags[0]]) == [Ack(1)]
    assert batcher.ack([tags[1]]) == [Ack(2)]


def test_acks_behind_an_unsettled_delivery_go_out_one_by_one() -> None:
    batcher = AckBatcher(0)
    tags = delivered(batcher, 6)
    # 1 and 2 settled, 3 held (a long task), 4 and 6 settled behind it.
    assert batcher.ack([tags[5], tags[0], tags[3], tags[1]]) == [Ack(2, multiple=True), Ack(4), Ack(6)]
    assert batcher.unsettled == [3, 5]
    # Once 3 is settled, only 3 and 5 remain to acknowledge; 4 and 6 were acknowledged already.
    assert batcher.ack([tags[2]]) == [Ack(3)]
    assert batcher.ack([tags[4]]) == [Ack(5)]
    assert batcher.unsettled == []


def test_out_of_order_settling_across_batches_acks_every_tag_once_and_nothing_early() -> None:
    """Replays the frames on a model of the broker's channel: an ack names an outstanding tag
    (else the broker closes the channel), and a multiple ack covers only settled deliveries."""
    batcher = AckBatcher(0)
    tags = delivered(batcher, 200)
    order = tags[:]
    random.Random(7).shuffle(order)
    outstanding = set(range(1, 201))
    settled: set[int] = set()
    for start in range(0, len(order), 17):
        batch = order[start : start + 17]
        settled.update(batch)
        for frame in batcher.ack(batch):
            assert frame.tag in outstanding
            covered = {t for t in outstanding if t <= frame.tag} if frame.multiple else {frame.tag}
            assert covered <= settled, f"{frame} acknowledges a delivery not settled yet"
            outstanding -= covered
        assert outstanding == set(range(1, 201)) - settled
    assert not outstanding and batcher.unsettled == []


def test_unknown_and_repeated_tags_are_ignored() -> None:
    batcher = AckBatcher(0)
    tags = delivered(batcher, 2)
    assert batcher.ack([tags[0], tags[0]]) == [Ack(1)]
    assert batcher.ack([tags[0]]) == []  # acknowledged before: a second ack would close the channel
    assert batcher.ack([99]) == []  # never delivered
    assert batcher.unsettled == [2]


def test_auto_ack_deliveries_are_not_kept() -> None:
    batcher = AckBatcher(0)
    tag = batcher.delivered(1, auto_ack=True)
    batcher.delivered(2)
    assert batcher.unsettled == [2]
    assert batcher.ack([tag]) == []


def test_a_rejected_delivery_leaves_the_order() -> None:
    batcher = AckBatcher(0)
    tags = delivered(batcher, 4)
    assert batcher.ack([tags[1]]) == [Ack(2)]  # behind 1
    assert batcher.reject(tags[0], requeue=True) == Reject(1, requeue=True)
    assert batcher.unsettled == [3, 4]
    # 3 and 4 now form the prefix: one multiple ack, which cannot touch 1 (rejected) or 2 (acked).
    assert batcher.ack([tags[3], tags[2]]) == [Ack(4, multiple=True)]
    assert batcher.reject(tags[0], requeue=False) == Reject(1, requeue=False)  # sent as asked


def test_rejects_interleaved_with_acks() -> None:
    batcher = AckBatcher(0)
    tags = delivered(batcher, 5)
    assert batcher.reject(tags[2], requeue=False) == Reject(3, requeue=False)
    assert batcher.ack([tags[0], tags[1], tags[3]]) == [Ack(4, multiple=True)]
    assert batcher.reject(tags[4], requeue=True) == Reject(5, requeue=True)
    assert batcher.unsettled == []


def test_tags_carry_the_generation_of_their_channel() -> None:
    assert AckBatcher(0).delivered(7) == 7
    assert AckBatcher(3).delivered(7) == 3 << TAG_BITS | 7


def test_a_new_channel_ignores_the_tags_of_the_old_one() -> None:
    old = AckBatcher(0)
    old_tags = delivered(old, 3)
    new = AckBatcher(1)  # the channel numbers its deliveries from 1 again
    new_tags = delivered(new, 3)
    assert set(old_tags).isdisjoint(new_tags)
    # Tag 1 of the old channel must not acknowledge tag 1 of the new one.
    assert new.ack(old_tags) == []
    assert new.reject(old_tags[0], requeue=True) is None
    assert new.unsettled == [1, 2, 3]
    assert new.ack(new_tags) == [Ack(3, multiple=True)]
