"""The catalogue: product files -> documents with embeddings -> a fresh index behind an alias.

- products: reading product files (JSON, JSONL, zips) into checked documents
- index: building an index, moving the alias onto it, the index's recorded encoder
- lookup: reading products back (texts for the cross-encoder, facts for profiles)
"""

from __future__ import annotations

from esrank.catalogue.index import IndexReport, index_catalogue
from esrank.catalogue.lookup import ProductFacts, fetch_texts, product_facts
from esrank.catalogue.products import RawProduct, read_products, text_of, to_document

__all__ = [
    "IndexReport", "ProductFacts", "RawProduct", "fetch_texts", "index_catalogue",
    "product_facts", "read_products", "text_of", "to_document",
]
