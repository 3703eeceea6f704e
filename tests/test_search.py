"""The search product: index a collection once (incrementally, resumably, on many ranks), search it by
text from the command line and a local web page, with the evaluator's own scores."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from eval.encode import encode_split
from eval.rerank import two_stage_blocks
from eval.scoring import SplitScorer
from model.backbone import tokenizer_for
from model.frame_rule import frame_rule_for
from model.trained_model import load_trained_model
from pipeline.annotations import load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings
from search.ann import ApproximateSearch, build_ann
from search.cli import main as search_main
from search.index import main as index_main
from search.index_format import INDEX_FILE, IndexFormatError, NpyAppender, VideoIndex
from search.query import MAX_QUERY_CHARS, QueryError, check_query
from search.searcher import open_searcher
from search.serve import main as serve_main
from shards.reader import shard_urls
from shards.storage import Store
from train.config import parse_config
from train.trainer import train

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    "seqTransf": ["--sim-header", "seqTransf"],  # coarse only: the pooled cosine is the model's score
    "wti": ["--sim-header", "meanP", "--interaction", "wti"],  # DRL's token interaction: a fine stage on frames and tokens
    "tightTransf": ["--sim-header", "tightTransf"],  # the cross encoder: no pooled vector, meanP coarse
    "eercf": ["--sim-header", "seqTransf", "--eercf"],  # EERCF: t W p coarse, frames and patch tokens fine
}


@pytest.fixture(scope="module")
def collection(sample_dataset, tmp_path_factory):
    """Shards of the 8 generated clips (2 per shard) and a briefly trained model of each kind."""
    root = tmp_path_factory.mktemp("search")
    records = load_annotations(str(sample_dataset / "annotations.jsonl"))
    build_shards(records, str(sample_dataset / "videos"), Store(str(root / "shards")), ExtractionSettings(short_side=112),
                 BuildOptions(samples_per_shard=2, workers=2, show_progress=False))  # fmt: skip
    for name, flags in MODELS.items():
        train(parse_config(["--train-shards", str(root / "shards"), "--output-dir", str(root / name), "--model", "tiny-ViT-112",
                            "--batch-size", "4", "--steps-per-epoch", "2", "--epochs", "1", "--max-frames", "8", "--workers", "0",
                            "--lr", "1e-3", "--coef-lr", "1", *flags]))  # fmt: skip
    return root


def _index(collection, model: str, out, *extra: str, shards: str | None = None) -> dict:
    code = index_main(["--checkpoint", str(collection / model), "--shards", shards or str(collection / "shards"), "--out", str(out), *extra])
    assert code == 0
    return json.loads((out / INDEX_FILE).read_text()) if "://" not in str(out) else {}


def _encoded(collection, model: str):
    trained = load_trained_model(str(collection / model))
    urls = shard_urls(str(collection / "shards"))
    rule = frame_rule_for(str(collection / "shards"), trained.config.max_frames, 112)
    split = encode_split(trained.model, urls, tokenizer_for(trained.config.model), torch.device("cpu"), trained.config.max_frames,
                         trained.config.max_words, 112, frame_rule=rule)  # fmt: skip
    return trained, split


@pytest.mark.parametrize("model", list(MODELS))
def test_search_scores_and_order_are_the_evaluators(collection, tmp_path, model):
    """Every caption of the split searched over the index: the scores are those of python -m eval's
    scorer on its own fp32 features (within fp16 storage: 1e-4 measured), and the order is its two-stage order."""
    _index(collection, model, tmp_path / "index")
    trained, split = _encoded(collection, model)
    scorer = SplitScorer(trained.model, split, torch.device("cpu"))
    searcher = open_searcher(str(tmp_path / "index"), rerank_topk=3, query_encoder="fp32")  # exact: the evaluator's encoder
    keys = [searcher.index.record(row)["key"] for row in range(len(searcher.index))]
    assert sorted(keys) == split.keys
    column = {key: split.keys.index(key) for key in keys}
    has_fine = trained.model.similarity.has_fine_stage
    text_block = two_stage_blocks(scorer, 3)[0] if has_fine else (lambda a, b: scorer.fine(slice(a, b), slice(0, len(split.keys))))
    compared = 0
    for caption_row, caption in enumerate(split.captions):
        result = searcher.search(caption, k=len(keys))
        assert result.reranked == (3 if has_fine else 0)
        expected_row = text_block(caption_row, caption_row + 1)[0].double().numpy()
        fine = scorer.fine(slice(caption_row, caption_row + 1), slice(0, len(split.keys)))[0].numpy()
        coarse = scorer.coarse(slice(caption_row, caption_row + 1), slice(0, len(split.keys)))[0].numpy()
        for hit in result.hits:
            reference = fine if hit.stage == "fine" else coarse
            assert hit.score == pytest.approx(float(reference[column[hit.record["key"]]]), abs=5e-4), (caption, hit)
        order = np.array([expected_row[column[hit.record["key"]]] for hit in result.hits])
        gaps = np.diff(order)
        # the evaluator's score may only rise where two were within fp16 noise
        assert (gaps <= 5e-4).all(), (caption, order)
        compared += 1
    assert compared == len(split.captions) == 24


def test_index_files_load_with_numpy_alone(collection, tmp_path):
    """As README says: plain .npy arrays and offset-indexed blobs, no project code needed."""
    manifest = _index(collection, "wti", tmp_path / "index", "--part-videos", "3")
    rows, vectors = [], []
    for name in manifest["parts"]:
        folder = tmp_path / "index" / "parts" / name
        vectors.append(np.load(folder / "video.npy", mmap_mode="r"))
        blob, offsets = (folder / "rows.bin").read_bytes(), np.load(folder / "rows.offsets.npy")
        rows += [json.loads(blob[offsets[i] : offsets[i + 1]]) for i in range(len(offsets) - 1)]
        thumbs, thumb_offsets = (folder / "thumbnails.bin").read_bytes(), np.load(folder / "thumbnails.offsets.npy")
        assert all(thumbs[thumb_offsets[i] : thumb_offsets[i] + 2] == b"\xff\xd8" for i in range(len(thumb_offsets) - 1))
        assert np.load(folder / "frames.npy").shape[:2] == np.load(folder / "frame_mask.npy").shape == (len(offsets) - 1, 8)
    assert len(manifest["parts"]) > 1 and manifest["num_videos"] == len(rows) == 8
    index = VideoIndex(str(tmp_path / "index"))
    assert np.array_equal(np.concatenate(vectors).astype(np.float32), index.video_vectors())
    assert [index.record(i) for i in range(8)] == rows
    assert index.keys() == [r["key"] for r in rows]
    assert all(set(r) >= {"key", "shard", "captions"} and len(r["captions"]) == 3 for r in rows)


def test_indexing_new_shards_appends_without_re_encoding(collection, tmp_path, capsys):
    urls = shard_urls(str(collection / "shards"))
    folder = tmp_path / "growing"
    os.makedirs(folder)
    for url in urls[:2]:
        shutil.copy(url, folder / os.path.basename(url))
    index = tmp_path / "index"
    before = _index(collection, "seqTransf", index, shards=str(folder))
    old_files = {p: os.stat(index / "parts" / p / "video.npy").st_ino for p in before["parts"]}
    for url in urls[2:]:  # more shards arrive in the same folder
        shutil.copy(url, folder / os.path.basename(url))
    after = _index(collection, "seqTransf", index, shards=str(folder))
    assert set(before["parts"]) < set(after["parts"]) and after["num_videos"] == 8 and before["num_videos"] == 4
    assert {p: os.stat(index / "parts" / p / "video.npy").st_ino for p in before["parts"]} == old_files, "old parts untouched"
    new_parts = [json.loads((index / "parts" / p / "part.json").read_text()) for p in after["parts"] if p not in before["parts"]]
    assert sorted(os.path.basename(s["url"]) for p in new_parts for s in p["shards"]) == sorted(os.path.basename(u) for u in urls[2:])
    fresh = _index(collection, "seqTransf", tmp_path / "fresh")
    appended, whole = VideoIndex(str(index)), VideoIndex(str(tmp_path / "fresh"))
    by_key = lambda ix: {ix.record(i)["key"]: ix.video_vectors()[i] for i in range(len(ix))}  # noqa: E731
    assert fresh["num_videos"] == 8 and by_key(appended).keys() == by_key(whole).keys()
    for key, vector in by_key(whole).items():
        assert np.allclose(by_key(appended)[key], vector, atol=1e-3)
    capsys.readouterr()
    # nothing new: nothing encoded, the same parts
    assert _index(collection, "seqTransf", index, shards=str(folder))["parts"] == after["parts"]
    # the same videos again from another folder: skipped by key and named, never searched twice
    rerun = _index(collection, "seqTransf", index)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rerun["num_videos"] == 8 and summary["skipped"]["duplicate_key"] == 8 and summary["new_videos"] == 0
    skipped = [k for p in rerun["parts"] for s in json.loads((index / "parts" / p / "part.json").read_text())["shards"]
               for k in s["skipped"]["duplicate_key"]]  # fmt: skip
    assert sorted(skipped) == sorted(by_key(whole))


def test_another_model_is_refused_by_the_index_and_by_search(collection, tmp_path, capsys):
    _index(collection, "seqTransf", tmp_path / "index")
    assert index_main(["--checkpoint", str(collection / "wti"), "--shards", str(collection / "shards"), "--out", str(tmp_path / "index")]) == 2
    assert "model_sha256" in capsys.readouterr().err
    with pytest.raises(IndexFormatError, match="search with the checkpoint the index was made with"):
        open_searcher(str(tmp_path / "index"), checkpoint=str(collection / "wti"))


def test_a_shard_that_fails_part_way_is_dropped_whole_and_retried(collection, tmp_path, capsys):
    shards = tmp_path / "shards"
    shutil.copytree(collection / "shards", shards)
    names = sorted(n for n in os.listdir(shards) if n.endswith(".tar"))
    broken = shards / names[1]
    good = broken.read_bytes()
    broken.write_bytes(good[: len(good) // 2 + 700])  # cut inside its second sample: the first one reads fine
    code = index_main(["--checkpoint", str(collection / "seqTransf"), "--shards", str(shards), "--out", str(tmp_path / "index")])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and [f["url"] for f in summary["failed_shards"]] == [str(broken)]
    assert summary["num_videos"] == 6, "none of the broken shard's rows, not even the one read before the fault"
    broken.write_bytes(good)
    assert index_main(["--checkpoint", str(collection / "seqTransf"), "--shards", str(shards), "--out", str(tmp_path / "index")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["new_shards"] == 1 and summary["num_videos"] == 8
    keys = [VideoIndex(str(tmp_path / "index")).record(i)["key"] for i in range(8)]
    assert len(set(keys)) == 8


def test_a_killed_indexing_job_resumes_from_its_committed_parts(collection, tmp_path):
    """SIGKILL to the job's process group while it waits on a stalled shard (a FIFO nobody writes):
    the parts it committed are adopted by the next run, which encodes only the rest."""
    shards = tmp_path / "shards"
    os.makedirs(shards)
    urls = shard_urls(str(collection / "shards"))
    for url in urls[:3]:
        shutil.copy(url, shards / os.path.basename(url))
    stalled = shards / "shard-999999.tar"
    os.mkfifo(stalled)
    index = tmp_path / "index"
    command = [sys.executable, "-m", "search.index", "--checkpoint", str(collection / "seqTransf"), "--shards", str(shards),
               "--out", str(index), "--part-videos", "1"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    parts = index / "parts"
    while time.monotonic() < deadline and len([p for p in (os.listdir(parts) if parts.exists() else []) if not p.startswith(".")]) < 3:
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        time.sleep(0.2)
    time.sleep(0.5)  # it is now blocked opening the FIFO
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    committed = sorted(p for p in os.listdir(parts) if not p.startswith("."))
    assert len(committed) == 3 and not (index / INDEX_FILE).exists(), "killed before it listed its parts"
    inodes = {p: os.stat(parts / p / "video.npy").st_ino for p in committed}
    os.remove(stalled)
    shutil.copy(urls[3], stalled)
    assert index_main(["--checkpoint", str(collection / "seqTransf"), "--shards", str(shards), "--out", str(index)]) == 0
    manifest = json.loads((index / INDEX_FILE).read_text())
    assert manifest["num_videos"] == 8 and set(committed) < set(manifest["parts"])
    assert {p: os.stat(parts / p / "video.npy").st_ino for p in committed} == inodes, "committed parts adopted, not redone"
    keys = [VideoIndex(str(index)).record(i)["key"] for i in range(8)]
    assert len(set(keys)) == 8


def test_two_ranks_under_torchrun_index_what_one_process_does(collection, tmp_path):
    single = tmp_path / "single"
    _index(collection, "wti", single)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "search.index",
               "--checkpoint", str(collection / "wti"), "--shards", str(collection / "shards"), "--out", str(tmp_path / "ddp")]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["num_videos"] == 8
    manifest = json.loads((tmp_path / "ddp" / INDEX_FILE).read_text())
    assert {json.loads((tmp_path / "ddp" / "parts" / p / "part.json").read_text())["rank"] for p in manifest["parts"]} == {0, 1}
    one, two = VideoIndex(str(single)), VideoIndex(str(tmp_path / "ddp"))
    rows_one = {one.record(i)["key"]: i for i in range(8)}
    for i in range(8):
        j = rows_one[two.record(i)["key"]]
        for array in ("video", "frames", "frame_mask"):
            assert np.allclose(two.take(array, np.array([i])).astype(np.float32), one.take(array, np.array([j])).astype(np.float32), atol=1e-3)


def test_index_and_search_in_an_s3_bucket(collection, s3_bucket, tmp_path):
    url = f"s3://{s3_bucket}/index"
    _index(collection, "wti", url, "--part-videos", "4")
    local = tmp_path / "local"
    _index(collection, "wti", local)
    remote_hits = open_searcher(url, rerank_topk=3).search("a red square", k=8).hits
    local_hits = open_searcher(str(local), rerank_topk=3).search("a red square", k=8).hits
    assert [(h.record["key"], round(h.score, 5)) for h in remote_hits] == [(h.record["key"], round(h.score, 5)) for h in local_hits]
    assert VideoIndex(url).thumbnail(0)[:2] == b"\xff\xd8"


def test_search_cli_prints_top_k_and_refuses_bad_queries(collection, tmp_path, capsys):
    _index(collection, "seqTransf", tmp_path / "index")
    assert search_main(["--index", str(tmp_path / "index"), "a green circle", "-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [h["rank"] for h in result["hits"]] == [1, 2, 3] and result["method"] == "exact"
    assert result["hits"][0]["score"] >= result["hits"][1]["score"] >= result["hits"][2]["score"]
    for bad, reason in (("", "empty"), ("x" * 10_000, "10,000 characters"), ("a\x00b", "control character")):
        assert search_main(["--index", str(tmp_path / "index"), bad]) == 2
        err = capsys.readouterr().err
        assert reason in err and "Traceback" not in err
    assert search_main(["--index", str(tmp_path / "nothing"), "a cat"]) == 2
    assert "python -m search.index" in capsys.readouterr().err


def test_approximate_first_stage_on_a_small_index_equals_the_exact_one(collection, tmp_path):
    """Every list probed (nprobe >= nlist): the IVF first stage must return the exact top k."""
    _index(collection, "seqTransf", tmp_path / "index", "--ann", "always")
    exact = open_searcher(str(tmp_path / "index"), mode="exact")
    approximate = open_searcher(str(tmp_path / "index"), mode="approximate")
    assert approximate.method == "approximate" and exact.method == "exact"
    for query in ("a red square moves right", "a blue circle", "green"):
        a, b = exact.search(query, k=5).hits, approximate.search(query, k=5).hits
        assert [h.row for h in a] == [h.row for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=2e-3)


# ------------------------------------------------------------------------------------------- unit


def test_query_rules():
    assert check_query("  a man cooking pasta \n") == "a man cooking pasta"
    assert check_query("caf\u00e9 au lait".encode()) == "caf\u00e9 au lait"
    for bad, reason in (("", "empty"), ("   ", "empty"), ("x" * (MAX_QUERY_CHARS + 1), "limit"), (b"\xff\xfe", "not UTF-8"),
                        ("a\x07b", "U+0007"), ("\ud800", "U+D800")):  # fmt: skip
        with pytest.raises(QueryError, match=re.escape(reason)):
            check_query(bad)
    assert check_query("x" * MAX_QUERY_CHARS)


def test_npy_appender_streams_rows_and_truncates(tmp_path):
    path = str(tmp_path / "a.npy")
    appender = NpyAppender(path, np.float16)
    rows = np.random.default_rng(0).standard_normal((10, 3, 4)).astype(np.float16)
    appender.append(rows[:4])
    appender.append(rows[4:7])
    appender.truncate(5)  # a shard that failed: rows 5.. dropped
    appender.append(rows[7:])
    appender.close((3, 4))
    assert np.array_equal(np.load(path), np.concatenate([rows[:5], rows[7:]]))
    empty = NpyAppender(str(tmp_path / "e.npy"), np.bool_)
    empty.close((8,))
    assert np.load(str(tmp_path / "e.npy")).shape == (0, 8)
    big = NpyAppender(str(tmp_path / "b.npy"), np.float16)
    big.append(np.zeros((1, 12, 49, 512), np.float16))
    big.rows = 10**9  # the header of a billion-row array has the same size: the rewrite never moves data
    big._write_header()
    big.handle.close()


def test_ivf_recall_on_clustered_vectors():
    """The approximate first stage finds most of the exact top 10 on clustered unit vectors."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 64)).astype(np.float32)
    vectors = centres[rng.integers(0, 50, 20_000)] + 0.6 * rng.standard_normal((20_000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, 20_000, 100)] + 0.3 * rng.standard_normal((100, 64)).astype(np.float32)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    ann = ApproximateSearch(build_ann(vectors), nprobe=16)
    found = ann.search(queries, 10)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])
    assert ann.rows == 20_000 and recall >= 0.9, recall
    assert ApproximateSearch(build_ann(vectors), nprobe=1).search(queries, 10)[1].shape == (100, 10)


def test_index_and_serve_bad_inputs_name_the_file(collection, tmp_path, capsys):
    shards = str(collection / "shards")
    assert index_main(["--checkpoint", str(tmp_path / "none.pt"), "--shards", shards, "--out", str(tmp_path / "i")]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert index_main(["--checkpoint", str(collection / "seqTransf"), "--shards", str(tmp_path / "noshards"), "--out", str(tmp_path / "i")]) == 2
    assert "noshards" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / INDEX_FILE).write_bytes(b'{"format": "clip4clip-ind')  # a truncated upload
    assert index_main(["--checkpoint", str(collection / "seqTransf"), "--shards", shards, "--out", str(broken)]) == 2
    assert search_main(["--index", str(broken), "a cat"]) == 2
    assert serve_main(["--index", str(broken), "--port", "0"]) == 2
    errors = capsys.readouterr().err
    assert errors.count(str(broken / INDEX_FILE)) == 3 and "Traceback" not in errors


def test_a_sample_with_an_unreadable_frame_is_named_not_indexed(collection, tmp_path, capsys):
    import io
    import tarfile

    shards = tmp_path / "shards"
    shutil.copytree(collection / "shards", shards)
    target = sorted(shards.glob("*.tar"))[0]
    with tarfile.open(target) as source:
        members = [(m, source.extractfile(m).read()) for m in source.getmembers()]
    broken_key = members[0][0].name.split(".")[0]
    with tarfile.open(target, "w") as out:
        for member, data in members:
            if member.name == f"{broken_key}.00.jpg":
                data = b"\xff\xd8 not a jpeg"
                member.size = len(data)
            out.addfile(member, io.BytesIO(data))
    assert index_main(["--checkpoint", str(collection / "seqTransf"), "--shards", str(shards), "--out", str(tmp_path / "index")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_videos"] == 7 and summary["skipped"]["undecodable"] == 1
    manifest = json.loads((tmp_path / "index" / INDEX_FILE).read_text())
    named = [k for p in manifest["parts"] for s in json.loads((tmp_path / "index" / "parts" / p / "part.json").read_text())["shards"]
             for k in s["skipped"]["undecodable"]]  # fmt: skip
    assert named == [broken_key]


def test_the_demos_example_query_reports_its_videos_true_rank(search_collection):
    """The demo prints a caption, the rank of the video it describes and how many captions rank theirs
    first: each number is checked here against a search of its own."""
    from tools.demo import example_query

    index = str(search_collection / "index")
    example = example_query(index)
    searcher = open_searcher(index)
    total = len(searcher.index)
    assert example.videos == total
    owners = [row for row in range(total) if example.query in searcher.index.record(row)["captions"]]
    rows = [hit.row for hit in searcher.search(example.query, total).hits]
    assert example.rank == 1 + min(rows.index(owner) for owner in owners)
    assert (example.rank == 1) == (example.captions_ranked_first > 0)
    assert example.captions == len({c for row in range(total) for c in searcher.index.record(row)["captions"]})


def test_the_command_line_searches_like_an_entry_and_by_a_vector_file(search_collection, tmp_path, capsys):
    import numpy as np

    from search.index_format import VideoIndex

    index_url = str(search_collection / "index")
    index = VideoIndex(index_url)
    vector = index.video_vectors()[index.keys().index("clip002")]
    np.save(tmp_path / "query.npy", vector)
    assert search_main(["--index", index_url, "--like", "clip002", "--vector", str(tmp_path / "query.npy"), "-k", "3", "--json"]) == 0
    like, by_vector = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert "clip002" not in [h["key"] for h in like["hits"]] and by_vector["hits"][0]["key"] == "clip002"
    assert [h["key"] for h in like["hits"]][:2] == [h["key"] for h in by_vector["hits"][1:3]] and "coarse video vectors" in like["note"]
    np.save(tmp_path / "short.npy", vector[:5])
    assert search_main(["--index", index_url, "--vector", str(tmp_path / "short.npy")]) == 2
    assert "dimensions" in capsys.readouterr().err
    assert search_main(["--index", index_url, "--like", "nope"]) == 2
    assert "no indexed video has the key 'nope'" in capsys.readouterr().err


def test_the_command_line_searches_by_a_video_or_image_file(search_collection, sample_dataset, tmp_path, capsys):
    """--file: a video decoded with the index's own build settings scores as its row does; a still image
    is a one-frame clip; bytes that are no video are refused with ffmpeg's reason."""
    from PIL import Image

    from search.index_format import VideoIndex

    index_url = str(search_collection / "index")
    index = VideoIndex(index_url)
    assert index.manifest["build_settings"]["short_side"] == 112  # the fixture's build, recorded by search.index
    record = index.record(index.keys().index("clip005"))
    video = sample_dataset / "videos" / record["source_file"]
    Image.fromarray(np.full((90, 160, 3), (200, 30, 30), dtype=np.uint8)).save(tmp_path / "still.png")
    assert search_main(["--index", index_url, "--file", str(video), "--file", str(tmp_path / "still.png"), "-k", "3", "--json"]) == 0
    by_video, by_image = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert by_video["hits"][0]["key"] == "clip005" and by_video["hits"][0]["score"] > 0.999  # the same frames: its own vector (fp16)
    assert "coarse video vectors" in by_video["note"] and f"{record['frames']} frame(s)" in by_video["note"]
    assert "1 frame(s)" in by_image["note"] and len(by_image["hits"]) == 3 and by_image["milliseconds"]["decode"] > 0
    (tmp_path / "junk.mp4").write_bytes(b"this is not a video" * 50)
    assert search_main(["--index", index_url, "--file", str(tmp_path / "junk.mp4")]) == 2
    error = capsys.readouterr().err
    assert "junk.mp4: not a video or image ffmpeg can decode" in error and "Invalid data" in error
