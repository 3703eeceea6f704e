"""The retrieval model shared by ``train`` and ``eval``: CLIP loading, video heads, similarities
(cosine, DRL's token interaction, EMCL-Net, the tightTransf cross encoder), PEFT, the model's
options (``ModelConfig``), the clip decoding and frame rule it reads shards with, and the
checkpoint layouts (this project's and the reference codebases'). It imports neither ``train``
nor ``eval``.

Importing the package installs one import rule, before any of its modules imports open_clip:
open_clip's optional import of Hugging Face ``transformers`` is skipped (model/open_clip_import.py
says why and how)."""

from model import open_clip_import

open_clip_import.install()
