"""Encoding products and queries with a MOON checkpoint, and retrieval metrics."""
