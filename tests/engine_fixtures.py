"""Test helpers for the training engine: a callback that simulates a kill mid-run (for resume tests)."""

from __future__ import annotations


class Killed(Exception):
    """What :class:`KillAt` raises: the run ends as if the process were killed."""


class KillAt:
    """Simulates a kill during ``epoch``: after the previous epoch's checkpoint, before this one's."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, epoch, metrics):
        if epoch == self.epoch:
            raise Killed
