"""esrank: Learning-to-Rank for Elasticsearch and OpenSearch, from feature files to served models."""

__version__ = "0.1.0"
