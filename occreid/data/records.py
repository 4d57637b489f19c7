"""The records every parser returns and every consumer (training, evaluation, tables) reads.

A record is one image: its path, person id and 0-based camera id, plus what the dataset knows about its
occlusion. ``occluded`` is ``None`` when the dataset does not record it (Market-1501, DukeMTMC-reID);
Occluded-Duke query images are occluded by construction, synthocc knows per image, and Occluded-REID's
query/gallery split is occluded/whole-body.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Record:
    path: str
    pid: int
    camid: int
    occluded: bool | None = None
    occlusion: float | None = None  # fraction of the person's area hidden, when known


@dataclass
class Splits:
    """The three splits of a re-ID dataset. ``train`` pids are relabelled to 0..num_train_pids-1."""

    name: str
    train: list[Record]
    query: list[Record]
    gallery: list[Record]
    meta: dict = field(default_factory=dict)

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({r.camid for r in self.train})

    @property
    def num_cams(self) -> int:
        return 1 + max(r.camid for r in (*self.train, *self.query, *self.gallery))

    def summary(self) -> dict:
        def part(recs):
            return {"images": len(recs), "ids": len({r.pid for r in recs}), "cams": len({r.camid for r in recs})}

        return {"train": part(self.train), "query": part(self.query), "gallery": part(self.gallery)}
