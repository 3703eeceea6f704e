"""Streaming DDP trainer for CLIP4Clip-style retrieval on open_clip: ``torchrun -m train ...``."""
