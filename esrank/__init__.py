"""esrank: Learning-to-Rank for Elasticsearch and OpenSearch, feature files to served models."""

__version__ = "0.1.0"
