"""prepare_data with hard negatives mined by a model: the rows carry its nearest other products."""

from __future__ import annotations

import json

import numpy as np

from moon_swift.data import ProductRecord
from moon_swift.data.prepare import prepare_data
from moon_swift.data.swift_rows import split_records


class FixedEmbedder:
    """Embeds product ``pN`` as the unit vector at angle N degrees: its nearest are N +- 1, N +- 2, ..."""

    def encode_products(self, records, **kwargs):
        angles = np.radians([int(r.product_id[1:]) for r in records])
        return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def test_mined_rows_carry_the_models_nearest_other_products(tmp_path):
    records = [ProductRecord(f"p{i}", f"item {i}", [], ["A", "B"]) for i in range(60)]
    report = prepare_data(records, [], tmp_path, hard_negatives=2, mine_with=FixedEmbedder())
    assert report.negatives_how == "mined (exact search)" and report.hard_negatives == [2] * report.train_products
    train, _ = split_records(records, 0.1)
    angle = {r.product_id: int(r.product_id[1:]) for r in train}
    for line in (tmp_path / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        own = angle[_id_of(row["positive_messages"][0])]
        negatives = [angle[_id_of(m)] for m in row["negative_messages"]]
        others = sorted((a for a in angle.values() if a != own), key=lambda a: abs(a - own))
        assert sorted(abs(a - own) for a in negatives) == sorted(abs(a - own) for a in others[:2])


def _id_of(messages: list[dict]) -> str:
    return messages[-1]["content"].split("<group_id>")[1].split("</group_id>")[0]
