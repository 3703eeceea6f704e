"""The inspector and reader on good, truncated and missing shards."""

import pytest
import webdataset
from PIL import Image

from pipeline.annotations import load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings
from shards.reader import ReadErrors, ShardReadError, iter_samples, shard_urls
from shards.sample_format import encode_sample, is_complete_sample
from shards.storage import Store
from tools.inspect_shards import main as inspect_main


@pytest.fixture(scope="module")
def built(sample_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    records = load_annotations(str(sample_dataset / "annotations.jsonl"))
    build_shards(records, str(sample_dataset / "videos"), Store(str(out)), ExtractionSettings(),
                 BuildOptions(samples_per_shard=4, workers=1, show_progress=False))  # fmt: skip
    return out


def test_inspect_prints_counts_and_writes_a_contact_sheet(built, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert inspect_main([str(built), "--sample", "5", "--contact-sheet", str(sheet)]) == 0
    out = capsys.readouterr().out
    assert "8 samples in 2 shards" in out and '"num_failures": 5' in out
    assert "key=clip005" in out
    image = Image.open(sheet)
    assert image.width > 200 and image.height >= 112


def test_inspect_flags_truncated_and_missing_shards(built, tmp_path, capsys):
    broken = tmp_path / "cut.tar"
    data = (built / "shard-000000.tar").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    assert inspect_main([str(broken)]) == 1
    out = capsys.readouterr().out
    assert f"unreadable: {broken}" in out and "samples in 1 shards" in out
    lopsided = tmp_path / "lopsided.tar"  # json promises 3 frames, the tar holds 2
    with open(lopsided, "wb") as handle, webdataset.TarWriter(handle, encoder=False) as writer:
        writer.write(encode_sample("k", [b"a", b"b"], {"frames": {"count": 3}}))
    assert inspect_main([str(lopsided)]) == 1
    assert f"incomplete sample skipped: {lopsided}:k" in capsys.readouterr().out
    assert inspect_main([str(tmp_path / "nothing-{0..1}.tar")]) == 1
    assert "nothing-0.tar" in capsys.readouterr().out
    assert inspect_main([str(tmp_path / "empty-dir")]) == 2


def test_reader_strict_mode_names_the_shard(built, tmp_path):
    broken = tmp_path / "cut.tar"
    data = (built / "shard-000001.tar").read_bytes()
    broken.write_bytes(data[:3000])
    with pytest.raises(ShardReadError, match="cut.tar"):
        list(iter_samples([str(broken)]))
    errors = ReadErrors()
    good = [s for s in iter_samples([str(broken), *shard_urls(str(built))], errors.handler) if is_complete_sample(s)]
    assert len(good) == 8 and [url for url, _ in errors.errors] == [str(broken)]


def test_sample_keys_with_dots_are_refused():
    with pytest.raises(ValueError, match="split"):
        encode_sample("a.b", [b"x"], {})
