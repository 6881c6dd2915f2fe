"""The fashion catalog as a named swift dataset: ``--dataset moon-fashion-dev[:title/image/category]``.

Rows are built from the catalog itself (:func:`~moon_swift.data.swift_rows.catalog_rows`) for the
training products only; the held-out products (the same id-hash split as ``prepare-data``
``--val-fraction 0.1``) are left for ``moon-swift eval``.
"""

from __future__ import annotations

import logging
import os

from ...core.errors import MoonInputError
from ...data.fashion_catalog import read_fashion_catalog
from ...data.swift_rows import CATALOG_PAIR_KINDS, catalog_rows, split_records

logger = logging.getLogger(__name__)

MOON_FASHION_DATASET = "moon-fashion-dev"
#: where the catalog directory is looked for (``products.csv`` + ``images/``)
CATALOG_ENV = "MOON_FASHION_CATALOG"
HELD_OUT_FRACTION = 0.1
#: the dataset path swift is given while MOON_FASHION_CATALOG is unset (the loader then says what to set)
UNSET = f"${CATALOG_ENV}"


def _catalog_loader():
    from datasets import Dataset as HfDataset
    from swift.dataset.loader import DatasetLoader

    class MoonCatalogLoader(DatasetLoader):
        """Reads the catalog directory and yields swift embedding rows (subsets = pair kinds)."""

        def load(self, dataset_syntax=None, dataset_meta=None, *, use_hf=None) -> HfDataset:
            kinds = [s for s in dataset_syntax.subsets if s != "default"] or ["title"]
            unknown = sorted(set(kinds) - set(CATALOG_PAIR_KINDS))
            if unknown:
                raise ValueError(f"{MOON_FASHION_DATASET}: unknown subsets {unknown}; use {CATALOG_PAIR_KINDS}")
            if dataset_syntax.dataset == UNSET:
                raise MoonInputError(f"{MOON_FASHION_DATASET}: set {CATALOG_ENV} to the fashion catalog directory "
                                     "(products.csv + images/)", field=CATALOG_ENV)  # fmt: skip
            records = read_fashion_catalog(dataset_syntax.dataset, on_bad_row="skip")
            train, held_out = split_records(records, HELD_OUT_FRACTION)
            logger.info("%s: %d training products (%d held out), pairs %s", MOON_FASHION_DATASET, len(train),
                        len(held_out), kinds)  # fmt: skip
            return HfDataset.from_list(list(catalog_rows(train, kinds)))

    return MoonCatalogLoader


def fashion_dataset_meta():
    from swift.dataset import DatasetMeta

    return DatasetMeta(
        dataset_name=MOON_FASHION_DATASET,
        dataset_path=os.path.abspath(os.environ[CATALOG_ENV]) if os.environ.get(CATALOG_ENV) else UNSET,
        subsets=list(CATALOG_PAIR_KINDS),
        loader=_catalog_loader(),
        tags=["embedding", "multimodal", "e-commerce"],
        help=f"fashion catalog pairs for MOON (catalog directory: ${CATALOG_ENV})",
    )
