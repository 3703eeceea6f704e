"""What every entry point runs under: the process group (torchrun/DDP) and rank-aware logging
and progress. Shared by ``train`` and ``eval``; imports neither."""
