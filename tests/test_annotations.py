"""Adapters on fixtures written in the datasets' published formats."""

import json
import pickle

import pytest

from pipeline.annotations import AnnotationError, VideoRecord, detect_format, load_annotations
from pipeline.video_index import VideoIndex


@pytest.fixture
def msrvtt_release(tmp_path):
    data = {
        "info": {"year": 2016},
        "videos": [
            {"category": 9, "url": "u", "video_id": "video0", "start time": 137.72, "end time": 149.44, "split": "train", "id": 0},
            {"category": 16, "url": "u", "video_id": "video1", "start time": 184.33, "end time": 206.89, "split": "train", "id": 1},
            {"category": 9, "url": "u", "video_id": "video7010", "start time": 1.0, "end time": 11.0, "split": "test", "id": 7010},
        ],
        "sentences": [
            {"caption": "a car is shown", "video_id": "video0", "sen_id": 0},
            {"caption": "a man drives  a car", "video_id": "video0", "sen_id": 1},
            {"caption": "people dance", "video_id": "video1", "sen_id": 2},
            {"caption": "a cartoon plays", "video_id": "video7010", "sen_id": 3},
            {"caption": "   ", "video_id": "video1", "sen_id": 4},
        ],
    }
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps(data))
    (tmp_path / "MSRVTT_train.9k.csv").write_text("video_id\nvideo1\nvideo0\n")
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr7010,video7010,a cartoon character talks\n")
    return tmp_path


def test_msrvtt_train_split_takes_all_sentences_in_csv_order(msrvtt_release):
    records = load_annotations(str(msrvtt_release / "MSRVTT_data.json"), split_file=str(msrvtt_release / "MSRVTT_train.9k.csv"))
    assert [r.video_id for r in records] == ["video1", "video0"]
    assert records[1].captions == ["a car is shown", "a man drives a car"]
    assert records[0].captions == ["people dance"]  # the blank caption is dropped
    assert {r.split for r in records} == {"train"}


def test_msrvtt_jsfusion_csv_alone_uses_its_sentences(msrvtt_release):
    records = load_annotations(str(msrvtt_release / "MSRVTT_JSFUSION_test.csv"))
    assert len(records) == 1
    assert records[0].video_id == "video7010"
    assert records[0].captions == ["a cartoon character talks"]
    assert records[0].split == "test"


def test_msrvtt_json_alone_filters_by_split(msrvtt_release):
    records = load_annotations(str(msrvtt_release / "MSRVTT_data.json"), split="test")
    assert [r.video_id for r in records] == ["video7010"]
    assert len(load_annotations(str(msrvtt_release / "MSRVTT_data.json"))) == 3


def test_msrvtt_split_csv_without_sentences_needs_the_json(msrvtt_release):
    with pytest.raises(AnnotationError, match="MSRVTT_data.json"):
        load_annotations(str(msrvtt_release / "MSRVTT_train.9k.csv"), fmt="msrvtt")


def test_msvd_pickle_and_split_list(tmp_path):
    raw = {
        "-4wsuPCjDBc_5_15": [["a", "squirrel", "is", "eating"], ["a", "chipmunk", "eats"]],
        "0lh_UWF9ZP4_62_69": [["a", "woman", "is", "cooking"]],
    }
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps(raw))
    (tmp_path / "test_list.txt").write_text("0lh_UWF9ZP4_62_69\n-4wsuPCjDBc_5_15\n\n")
    records = load_annotations(str(tmp_path / "raw-captions.pkl"), split_file=str(tmp_path / "test_list.txt"))
    assert [r.video_id for r in records] == ["0lh_UWF9ZP4_62_69", "-4wsuPCjDBc_5_15"]
    assert records[1].captions == ["a squirrel is eating", "a chipmunk eats"]
    assert records[0].split == "test"
    (tmp_path / "bad_list.txt").write_text("nope\n")
    with pytest.raises(AnnotationError, match="nope"):
        load_annotations(str(tmp_path / "raw-captions.pkl"), split_file=str(tmp_path / "bad_list.txt"))


def test_generic_csv_groups_rows_per_video(tmp_path):
    path = tmp_path / "ann.csv"
    path.write_text("video,caption,split\nsub/a.mp4,first,train\nb.mp4,other,test\nsub/a.mp4,second,train\n")
    assert detect_format(str(path)) == "csv"
    records = load_annotations(str(path))
    assert [(r.video_id, r.captions, r.split) for r in records] == [("a", ["first", "second"], "train"), ("b", ["other"], "test")]


def test_jsonl_with_unicode_and_bad_lines(tmp_path):
    path = tmp_path / "ann.jsonl"
    path.write_text('{"video": "x.mp4", "captions": ["un café ☕", ""]}\n\n{"video": "y.mp4", "caption": "one"}\n', encoding="utf-8")
    records = load_annotations(str(path), split="val")
    assert records[0].captions == ["un café ☕"]
    assert records[1].captions == ["one"] and records[1].split == "val"
    path.write_text('{"video": "x.mp4", "captions": ["a"]}\n{not json\n')
    with pytest.raises(AnnotationError, match=r"ann.jsonl:2"):
        load_annotations(str(path))


@pytest.mark.parametrize("content", ["", "video,caption\n"])
def test_empty_annotation_files_are_refused(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    with pytest.raises(AnnotationError, match="empty.csv"):
        load_annotations(str(path), fmt="csv")


def test_missing_annotation_file_is_named(tmp_path):
    with pytest.raises(AnnotationError, match="nothere.json"):
        load_annotations(str(tmp_path / "nothere.json"))


def test_video_index_resolves_ids_and_refuses_escapes(tmp_path):
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    (videos / "video1.avi").write_bytes(b"x")
    (videos / "sub" / "clip.mp4").write_bytes(b"x")
    (tmp_path / "secret.mp4").write_bytes(b"x")
    index = VideoIndex(str(videos))
    assert index.resolve(VideoRecord("video1", "video1", ["c"])).path.endswith("video1.avi")
    assert index.resolve(VideoRecord("clip", "sub/clip.mp4", ["c"])).path.endswith("sub/clip.mp4")
    escaped = index.resolve(VideoRecord("secret", "../secret.mp4", ["c"]))
    assert escaped.path is None and "escapes" in escaped.problem
    absolute = index.resolve(VideoRecord("secret", str(tmp_path / "secret.mp4"), ["c"]))
    assert absolute.path is None and "escapes" in absolute.problem
    missing = index.resolve(VideoRecord("video2", "video2", ["c"]))
    assert missing.path is None and "video2" in missing.problem


def test_real_msrvtt_test_csv_against_sample_videos(msrvtt_sample):
    records = load_annotations(str(msrvtt_sample / "MSRVTT_JSFUSION_test.csv"))
    assert len(records) == 1000
    index = VideoIndex(str(msrvtt_sample / "videos"))
    resolved = [index.resolve(r) for r in records]
    assert sum(r.path is not None for r in resolved) == 39
