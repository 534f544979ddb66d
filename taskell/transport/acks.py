"""Acknowledgements in few frames: the frames that settle a batch of deliveries on one channel.

A channel numbers its deliveries 1, 2, 3, ... and one ``multiple`` ack settles every delivery
up to a tag. ``AckBatcher`` keeps the channel's unsettled tags in delivery order; given the
tags settled since the last batch, it returns one ``multiple`` ack for the longest settled
prefix and a single ack for each settled tag behind a delivery still unsettled (say, a long
task). Rejects go out one by one as they come and only leave the order.

Tags handed out carry the channel's generation above ``TAG_BITS``: a new channel numbers from 1
again, and a tag of an earlier channel must not settle a different delivery of this one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["TAG_BITS", "Ack", "AckBatcher", "Reject"]

TAG_BITS = 40  # tag handed out = generation << TAG_BITS | the channel's own tag
_TAG_MASK = (1 << TAG_BITS) - 1


@dataclass(frozen=True, slots=True)
class Ack:
    """``basic.ack`` of a channel tag (and, with ``multiple``, of every unsettled one before it)."""

    tag: int
    multiple: bool = False


@dataclass(frozen=True, slots=True)
class Reject:
    """``basic.reject`` of a channel tag."""

    tag: int
    requeue: bool


class AckBatcher:
    """The unsettled deliveries of one channel (the ``generation``-th), used on one thread."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self._unsettled: dict[int, bool] = {}  # channel tag -> ack requested, in delivery order

    @property
    def unsettled(self) -> list[int]:
        """Channel tags neither acknowledged nor rejected yet, in delivery order."""
        return list(self._unsettled)

    def delivered(self, channel_tag: int, *, auto_ack: bool = False) -> int:
        """Note a delivery (not kept with ``auto_ack``: the broker settled it); returns its tag."""
        if not auto_ack:
            self._unsettled[channel_tag] = False
        return self.generation << TAG_BITS | channel_tag

    def ack(self, tags: Iterable[int]) -> list[Ack]:
        """The frames that acknowledge ``tags`` (in any order; tags of other channels and tags
        already settled are ignored)."""
        unsettled = self._unsettled
        settled = {tag & _TAG_MASK for tag in tags if tag >> TAG_BITS == self.generation}
        settled.intersection_update(unsettled)
        for tag in settled:
            unsettled[tag] = True
        prefix = list(itertools.takewhile(unsettled.__getitem__, unsettled))
        frames = [Ack(prefix[-1], multiple=len(prefix) > 1)] if prefix else []
        for tag in prefix:
            del unsettled[tag]
        for tag in sorted(settled.intersection(unsettled)):  # behind an unsettled one
            del unsettled[tag]
            frames.append(Ack(tag))
        return frames

    def reject(self, tag: int, *, requeue: bool) -> Reject | None:
        """The frame that rejects ``tag``, or None for a tag of another channel."""
        if tag >> TAG_BITS != self.generation:
            return None
        channel_tag = tag & _TAG_MASK
        self._unsettled.pop(channel_tag, None)
        return Reject(channel_tag, requeue)
