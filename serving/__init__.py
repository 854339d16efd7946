"""Serving: the in-process scoring operator (:mod:`banditloop.serving.scorer`) and its HTTP service."""
