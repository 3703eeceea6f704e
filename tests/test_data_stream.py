"""The training stream on hand-made shards: corrupt frames are skipped and counted, never blank."""

import io

import numpy as np
import torch
import webdataset
from PIL import Image

from shards.sample_format import encode_sample
from train.data import ClipStream, StreamConfig


def jpeg(level: int, size: tuple[int, int] = (150, 112)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), level, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_shard(path, samples):
    with open(path, "wb") as handle, webdataset.TarWriter(handle, encoder=False) as writer:
        for key, frames in samples:
            writer.write(encode_sample(key, frames, {"captions": [f"caption of {key}"], "frames": {"count": len(frames)}}))


def fake_tokenize(texts, context_length):
    return torch.zeros(len(texts), context_length, dtype=torch.long)


def test_corrupt_frame_skips_the_sample_and_is_counted(tmp_path):
    shard = tmp_path / "s.tar"
    write_shard(shard, [("good1", [jpeg(40), jpeg(80)]), ("broken", [jpeg(40), b"\xff\xd8 not a jpeg"]), ("good2", [jpeg(200)])])
    config = StreamConfig(urls=(str(shard),), batch_size=2, max_frames=3, image_size=112, shuffle_buffer=1, workers=0)
    batches = iter(ClipStream(config, fake_tokenize, rank=0, world_size=1, start_step=0))
    seen = []
    for _ in range(6):
        batch = next(batches)
        seen.extend(batch["keys"])
        assert batch["frames"].shape == (2, 3, 3, 112, 112) and batch["frames"].dtype == torch.uint8
        for keys_index, key in enumerate(batch["keys"]):
            count = 2 if key == "good1" else 1
            assert batch["mask"][keys_index].tolist() == [True] * count + [False] * (3 - count)
            assert batch["frames"][keys_index, count:].sum() == 0  # padding is masked
            assert batch["frames"][keys_index, :count].float().mean() > 20  # real pixels, not zeros
    assert "broken" not in seen and {"good1", "good2"} <= set(seen)
    assert batch["skipped"]["undecodable"] >= 1


def test_samples_cut_short_are_skipped(tmp_path):
    shard = tmp_path / "cut.tar"
    with open(shard, "wb") as handle, webdataset.TarWriter(handle, encoder=False) as writer:
        writer.write(encode_sample("whole", [jpeg(90)], {"captions": ["a"], "frames": {"count": 1}}))
        writer.write(encode_sample("partial", [jpeg(90)], {"captions": ["b"], "frames": {"count": 2}}))
    config = StreamConfig(urls=(str(shard),), batch_size=1, max_frames=2, image_size=112, shuffle_buffer=1, workers=0)
    batches = iter(ClipStream(config, fake_tokenize, rank=0, world_size=1, start_step=0))
    keys = [next(batches)["keys"][0] for _ in range(4)]
    assert set(keys) == {"whole"}


def test_device_decoding_gives_the_worker_frames_and_full_batches_without_broken_clips(tmp_path):
    """--decode-on device, run on the CPU here: same pixels as worker decoding, corrupt clips
    dropped and counted, every batch still batch_size clips."""
    from train.device_decode import DeviceDecodedBatches

    shard = tmp_path / "s.tar"
    write_shard(shard, [("good1", [jpeg(40, (150, 112)), jpeg(80, (112, 150))]), ("broken", [jpeg(40), b"\xff\xd8 not a jpeg"]),
                        ("good2", [jpeg(200, (224, 160))]), ("good3", [jpeg(120), jpeg(10), jpeg(250)])])  # fmt: skip
    common = {"urls": (str(shard),), "batch_size": 3, "max_frames": 3, "image_size": 112, "shuffle_buffer": 1, "workers": 0}
    reference = {}
    worker_batches = iter(ClipStream(StreamConfig(**common), fake_tokenize, rank=0, world_size=1, start_step=0))
    for _ in range(4):
        batch = next(worker_batches)
        for i, key in enumerate(batch["keys"]):
            reference[key] = (batch["frames"][i], batch["mask"][i])
    packed = iter(ClipStream(StreamConfig(**common, decode_on="device"), fake_tokenize, rank=0, world_size=1, start_step=0))
    decoded = DeviceDecodedBatches(packed, 3, 3, 112, torch.device("cpu"))
    for _ in range(4):
        batch = next(decoded)
        assert batch["frames"].shape == (3, 3, 3, 112, 112) and batch["tokens"].shape == (3, 32)
        for i, key in enumerate(batch["keys"]):
            frames, mask = reference[key]
            assert torch.equal(batch["mask"][i], mask)
            assert (batch["frames"][i].int() - frames.int()).abs().max() <= 1  # same decoder, same resize/crop
    assert decoded.undecodable >= 1 and batch["skipped_on_device"] == decoded.undecodable
    assert "broken" not in reference
