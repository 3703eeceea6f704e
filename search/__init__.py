"""The search product: index a collection once, search it by text, serve it.

``python -m search.index`` encodes shards into an index (index_format, indexer; ray_index on a Ray
cluster), ``python -m search`` searches one from the command line (searcher, ann, query), and
``python -m search.serve`` serves it (service, served_index, query_batcher, search_page). It
builds on the evaluator's model loading and encoding (eval/), which never imports it.
"""
