"""Optional TensorBoard events (``--tensorboard``), the convention open_clip's users expect.

Events are written to a local folder (TensorBoard's writer cannot append to object stores);
for an ``--output-dir`` on a bucket they go to a local ``tensorboard`` folder of the same run
name under the working directory, and are uploaded beside the run at the end.
"""

from __future__ import annotations

import os

from runtime.run_folder import TENSORBOARD
from shards.storage import Store


class TensorBoard:
    def __init__(self, output_dir: str | None) -> None:
        self.writer, self.remote = None, None
        if output_dir is None:
            return
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package (requirements.txt)

        store = Store(output_dir)
        if store.is_local:
            folder = store.path(TENSORBOARD)
        else:
            folder = os.path.join(TENSORBOARD, os.path.basename(store.root))
            self.remote = store
        self.folder = folder
        self.writer = SummaryWriter(folder)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        if self.remote is not None:
            for name in sorted(os.listdir(self.folder)):
                with open(os.path.join(self.folder, name), "rb") as handle:
                    self.remote.write_bytes(f"tensorboard/{name}", handle.read())
        self.writer = None
