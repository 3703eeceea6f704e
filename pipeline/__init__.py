"""Preprocessing: raw videos -> sampled JPEG frames + captions -> WebDataset shards.

Run as ``python -m pipeline build ...`` and ``python -m pipeline merge-manifest ...``.
"""
