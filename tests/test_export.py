"""Vectors out (issue 36 part 3): ``python -m search.export`` writes every indexed row's key, coarse video vector,
source, time range and captions to Parquet (read back with pyarrow) or .npy + .jsonl, chunk by chunk; the
service's ``include=vectors`` hands them out with the hits."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from search.export import main as export_main
from search.index_format import VideoIndex


def test_parquet_and_npy_exports_hold_the_index_rows(search_collection, tmp_path):
    index_url = str(search_collection / "index")
    index = VideoIndex(index_url)
    expected = index.video_vectors()
    keys = index.keys()
    assert export_main(["--index", index_url, "--out", str(tmp_path / "out" / "vectors.parquet"), "--chunk-rows", "3"]) == 0
    parquet = pq.ParquetFile(tmp_path / "out" / "vectors.parquet")
    assert parquet.metadata.num_row_groups == sum(-(-p.info["rows"] // 3) for p in index.parts)  # written chunk by chunk
    table = parquet.read()
    assert table.column("key").to_pylist() == keys
    np.testing.assert_array_equal(np.array(table.column("vector").to_pylist(), dtype=np.float32), expected)
    first = index.record(0)
    row = table.slice(0, 1).to_pylist()[0]
    assert row["captions"] == first["captions"] and row["caption"] == first["captions"][0] and row["video"] == first["video_id"]
    assert row["end_s"] == pytest.approx(first["duration_s"]) and row["start_s"] == 0.0  # a whole clip: from 0 to its end
    assert export_main(["--index", index_url, "--out", str(tmp_path / "vectors.npy"), "--chunk-rows", "5"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "vectors.npy"), expected)
    lines = [json.loads(line) for line in (tmp_path / "vectors.jsonl").read_text().splitlines()]
    assert [line["key"] for line in lines] == keys


def test_bad_export_requests_are_refused(search_collection, tmp_path, capsys):
    with pytest.raises(SystemExit):
        export_main(["--index", str(search_collection / "index"), "--out", str(tmp_path / "vectors.csv")])
    assert export_main(["--index", str(tmp_path / "nothing"), "--out", str(tmp_path / "v.parquet")]) == 2
    assert "nothing" in capsys.readouterr().err
