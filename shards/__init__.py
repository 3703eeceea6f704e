"""The shard format: WebDataset tars of sampled JPEG frames + JSON metadata, and a manifest.

Writer, reader and manifest live here so the builder, the trainer and the evaluator agree
on one definition of a sample.
"""
