"""The retrieval model shared by ``train`` and ``eval``: CLIP loading, video heads, similarities
(cosine, DRL's token interaction, EMCL-Net, the tightTransf cross encoder), PEFT, the model's
options (``ModelConfig``), the clip decoding and frame rule it reads shards with, and the
checkpoint layouts (this project's and the reference codebases'). It imports neither ``train``
nor ``eval``."""
