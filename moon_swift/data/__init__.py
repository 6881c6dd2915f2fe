"""Product data: records, readers and conversion to ms-swift embedding rows."""

from .fashion_catalog import read_fashion_catalog
from .records import BadRowLog, ProductRecord
from .swift_rows import read_records, split_records, title_to_product_rows, write_jsonl, write_records

__all__ = [
    "BadRowLog",
    "ProductRecord",
    "read_fashion_catalog",
    "read_records",
    "split_records",
    "title_to_product_rows",
    "write_jsonl",
    "write_records",
]
