"""``python -m pipeline build|resample|merge-manifest`` command line (``build --distributor ray`` for a Ray cluster)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from pipeline.annotations import FORMATS, AnnotationError, Columns, load_annotations
from pipeline.build import BuildOptions, BuildReport, build_shards, prepare_build
from pipeline.cluster import job_share
from pipeline.dry_run import plan_summary
from pipeline.extract import ExtractionSettings
from pipeline.holdout import holdout_record, split_records
from pipeline.retry import prepare_retry, retry_token
from pipeline.sampling import SlicePosition
from pipeline.windows import Windows, folder_records
from runtime.cli import HelpFormatter
from runtime.ray_cluster import RayOptions, RayUnavailableError, task_location
from shards.manifest import FAILURES_NAME, MANIFEST_NAME, BuildStateError, kind_of, merge_manifest, read_failures, read_manifest
from shards.storage import StorageError, Store


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _windows(text: str) -> Windows:
    try:
        return Windows.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter, prog="python -m pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", formatter_class=HelpFormatter, help="transcode, sample and pack videos into WebDataset shards")
    build.add_argument(
        "--annotations",
        help="MSR-VTT, MSVD, LSMDC, ActivityNet Captions, DiDeMo or VATEX annotation file, or a generic .csv/.tsv/.parquet/.jsonl "
             "(required, except with --windows: then every video under --videos, uncaptioned)",
    )  # fmt: skip
    build.add_argument("--windows", metavar="LEN:STRIDE", type=_windows, default=None,
                       help="cut every video without a start/end into LEN-second windows every STRIDE seconds, each its own sample "
                            "(moments of long videos, for search; e.g. 10:5)")  # fmt: skip
    build.add_argument(
        "--videos", required=True, help="folder or fsspec URL (s3://bucket/raw/) holding the videos (searched recursively by id)"
    )
    build.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    build.add_argument("--format", default="auto", choices=FORMATS, help="auto recognises every layout from the file")
    build.add_argument(
        "--split-file",
        help="MSR-VTT split CSV (with MSRVTT_data.json), MSVD/DiDeMo *_list.txt, or ActivityNet *_ids.json",
    )
    for column in ("video", "caption", "split", "start", "end"):
        build.add_argument(f"--{column}-column", help=f"generic tables: the column holding the {column} (default: a known name)")
    build.add_argument("--split", help="split name to record (and, for MSRVTT_data.json alone, to select)")
    build.add_argument("--prefix", default="shard", help="shard names are PREFIX-NNNNNN.tar")
    build.add_argument("--samples-per-shard", type=int, default=100)
    build.add_argument(
        "--max-shard-bytes", type=int, default=None, help="start a new part (PREFIX-NNNNNN-K.tar) before a shard passes this size"
    )
    build.add_argument("--fps", type=_positive_float, default=3.0, help="transcode frame rate (CLIP4Clip: 3)")
    build.add_argument("--sample-fps", type=_positive_float, default=1.0, help="frames kept per second (CLIP4Clip feature_framerate: 1)")
    build.add_argument("--short-side", type=int, default=224, help="short side in pixels; 0 keeps the source size")
    build.add_argument("--max-frames", type=int, default=12)
    build.add_argument(
        "--slice",
        default="uniform",
        choices=[p.value for p in SlicePosition],
        help="frames kept from long clips (CLIP4Clip slice_framepos 0/1/2)",
    )
    build.add_argument("--jpeg-quality", type=int, default=95)
    build.add_argument("--keep-transcode", action="store_true", help="also store the 3 fps mp4 in each sample")
    build.add_argument(
        "--max-seconds", type=_positive_float, default=None, help="decode at most this much of each video (caps huge inputs)"
    )
    build.add_argument(
        "--allow-partial",
        action="store_true",
        help="keep what a truncated file decoded (flagged partial in its JSON) instead of recording a failure",
    )
    build.add_argument("--timeout", type=_positive_float, default=600.0, help="seconds before one ffmpeg call is killed")
    build.add_argument("--workers", type=int, default=0, help="decoder processes (default: all cores)")
    build.add_argument("--num-jobs", type=int, default=None, help="jobs sharing this build (default: from Slurm, else 1)")
    build.add_argument("--job-index", type=int, default=None)
    build.add_argument(
        "--ignore-missing", action="store_true", help="drop annotations whose video file does not exist (counted in the manifest)"
    )
    build.add_argument("--retry-failures", action="store_true",
                       help="attempt again only the videos in the build's failures.jsonl (after an outage or a fixed file): what succeeds "
                            "goes into new shards of the same build, existing shards stay as they are (same annotations and options as the build)")  # fmt: skip
    build.add_argument("--val-fraction", type=float, default=None,
                       help="hold out this share of the videos for validation: builds OUT/train and OUT/val, video-disjoint and "
                            "deterministic (by a hash of each video's reference; each manifest records the rule)")  # fmt: skip
    build.add_argument("--max-failure-fraction", type=_fraction, default=DEFAULT_MAX_FAILURE_FRACTION,
                       help="exit with status 1 when more than this share of the build's videos failed (a build that wrote no "
                            "sample always does): `build && train` stops here, not later in the trainer")  # fmt: skip
    build.add_argument("--no-progress", action="store_true")
    build.add_argument(
        "--distributor", default="local", choices=["local", "ray"],
        help="local: a process pool on this machine (with --num-jobs for a split over jobs); ray: one task per shard on a Ray cluster",
    )  # fmt: skip
    build.add_argument(
        "--ray-address", default=None,
        help="Ray cluster to join (host:port or ray://host:10001; default: RAY_ADDRESS, else a cluster started on this machine, else a new local one)",
    )  # fmt: skip
    build.add_argument("--ray-max-retries", type=int, default=RayOptions.max_retries,
                       help="attempts after a task's worker or node dies (or a storage error), before its unit is reported failed")  # fmt: skip
    build.add_argument("--dry-run", action="store_true", help="plan only: print units, tasks and driver memory, write nothing")

    again = commands.add_parser("resample", formatter_class=HelpFormatter, help="new shards from a --keep-transcode build: other --max-frames/--sample-fps/--slice")
    again.add_argument("--shards", required=True, help="the --keep-transcode build's output folder or URL")
    again.add_argument("--out", required=True, help="output folder or URL for the re-sampled build")
    again.add_argument("--max-frames", type=int, default=None)
    again.add_argument("--sample-fps", type=_positive_float, default=None)
    again.add_argument("--slice", default=None, choices=[p.value for p in SlicePosition])

    merge = commands.add_parser("merge-manifest", formatter_class=HelpFormatter, help="join the per-unit records of a (cluster) build into manifest.json")
    merge.add_argument("--out", required=True, help="the build's output folder or s3:// URL")
    return parser


MOSTLY_MISSING = 0.5  # above this share of annotated videos without a file, a build says --ignore-missing exists
DEFAULT_MAX_FAILURE_FRACTION = 0.5  # past this share of failed videos a build exits 1 (--max-failure-fraction)
SHOWN_FAILURE_IDS = 3


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction from 0 to 1")
    return value


def failure_summary(store: Store, manifest: dict) -> list[str]:
    """The build's standing failures by reason, as video2dataset's stats give them: each kind with its count,
    its first ids and one reason, most frequent first, and where the full list is."""
    failures = read_failures(store) if manifest["num_failures"] else []
    if not failures:
        return []
    by_kind: dict[str, list[dict]] = {}
    for failure in failures:
        by_kind.setdefault(kind_of(failure), []).append(failure)
    lines = [f"{len(failures)} video(s) failed, by reason (every one, with ffmpeg's words, in {store.url_of(FAILURES_NAME)}):"]
    for kind, group in sorted(by_kind.items(), key=lambda item: (-len(item[1]), item[0])):
        ids = ", ".join(str(f["video_id"]) for f in group[:SHOWN_FAILURE_IDS]) + (", ..." if len(group) > SHOWN_FAILURE_IDS else "")
        reason = group[0]["error"].splitlines()[0][:160]
        lines.append(f"  {kind}: {len(group)} ({ids}), e.g. {reason}")
    return lines


def build_verdict(manifest: dict, max_failure_fraction: float) -> str | None:
    """Why the build should exit non-zero (nothing built, or too much failed), or None."""
    samples, failed = manifest["num_samples"], manifest["num_failures"]
    if samples == 0:
        return f"error: nothing was built: all {failed} video(s) failed" if failed else "error: nothing was built: the annotations name no video"
    if failed > max_failure_fraction * (samples + failed):
        return (f"error: {failed} of {samples + failed} videos failed ({failed / (samples + failed):.0%}), more than "
                f"--max-failure-fraction {max_failure_fraction:g}: the shards are written, but look at the failures before training")  # fmt: skip
    return None


def print_build_summary(report: BuildReport, num_jobs: int, job_index: int, out: str, annotations: str) -> None:
    """What the build did, in sentences: nothing to do, what it skipped, and where the results are."""
    job = f"job {job_index + 1}/{num_jobs}: " if num_jobs > 1 else ""
    m = report.manifest
    if report.units_built == 0:
        if m is not None:
            print(f"{job}nothing to build: {m['num_samples']} samples already in {len(m['shards'])} shards of {out} "
                  f"({m['num_failures']} failures listed in failures.jsonl)")  # fmt: skip
        else:
            print(f"{job}nothing to build: this job's {report.units_skipped} unit(s) are done")
    else:
        print(f"{job}built {report.units_built} unit(s), skipped {report.units_skipped} already done; "
              f"{report.samples_written} samples written, {report.failures} failures")  # fmt: skip
    if report.ignored_missing:
        print(f"--ignore-missing: {report.ignored_missing} annotated videos not found, left out (manifest: ignored_missing)")
    if report.missing and report.missing > MOSTLY_MISSING * report.videos_planned:
        print(f"warning: {report.missing} of the {report.videos_planned} videos annotated in {annotations} have no file (each is a "
              "failure in failures.jsonl). A partial download? Build into a new --out with --ignore-missing to leave them out, "
              "or add the files and rerun with --retry-failures", file=sys.stderr)  # fmt: skip
    if m is not None and report.units_built:
        print(f"manifest: {m['num_samples']} samples in {len(m['shards'])} shards, {m['num_failures']} failures listed in failures.jsonl")
        print(f"totals: {json.dumps(m['totals'])}")
    elif m is None:
        print("other jobs may still be running; when all are done: python -m pipeline merge-manifest --out", out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "merge-manifest":
            manifest = merge_manifest(Store(args.out))
            print(json.dumps({k: v for k, v in manifest.items() if k != "shards"} | {"num_shards": len(manifest["shards"])}, indent=1))
            return 0
        if args.command == "resample":
            from pipeline.resample import ResampleError, resample  # reads shards with webdataset (and so torch): only here

            try:
                manifest = resample(args.shards, args.out, args.max_frames, args.sample_fps, SlicePosition(args.slice) if args.slice else None)
            except ResampleError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            print(f"resampled: {manifest['num_samples']} samples in {len(manifest['shards'])} shards, {manifest['num_failures']} failures")
            return 0
        if args.distributor == "ray" and (args.num_jobs is not None or args.job_index is not None):
            raise ValueError("--distributor ray schedules the whole build itself: leave out --num-jobs/--job-index")
        num_jobs, job_index = job_share(args.num_jobs, args.job_index) if args.distributor == "local" else (1, 0)
        settings = ExtractionSettings(
            transcode_fps=args.fps,
            sample_fps=args.sample_fps,
            short_side=args.short_side,
            max_frames=args.max_frames,
            slice_position=SlicePosition(args.slice),
            jpeg_quality=args.jpeg_quality,
            keep_transcode=args.keep_transcode,
            max_seconds=args.max_seconds,
            timeout_s=args.timeout,
            allow_partial=args.allow_partial,
        )
        options = BuildOptions(
            prefix=args.prefix,
            samples_per_shard=args.samples_per_shard,
            max_shard_bytes=args.max_shard_bytes,
            workers=args.workers,
            num_jobs=num_jobs,
            job_index=job_index,
            show_progress=not args.no_progress,
            ignore_missing=args.ignore_missing,
            windows=args.windows,
        )
        columns = Columns(args.video_column, args.caption_column, args.split_column, args.start_column, args.end_column)
        if args.annotations is not None:
            records = load_annotations(args.annotations, args.format, args.split_file, args.split, columns)
        elif args.windows is not None:
            records = folder_records(args.videos)
        else:
            raise ValueError("--annotations is required (only a --windows build for search can take every video under --videos)")
        if args.val_fraction is None:
            return run_build(args, records, args.out, settings, options, num_jobs, job_index)
        parts = split_records(records, args.val_fraction)
    except (AnnotationError, BuildStateError, StorageError, RayUnavailableError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    codes = []
    for part, chosen in parts.items():  # OUT/train, then OUT/val: each an ordinary build, its manifest naming the split
        where = f"{args.out.rstrip('/')}/{part}"
        print(f"{part}: {len({record.reference for record in chosen})} videos -> {where} (--val-fraction {args.val_fraction:g}, by a hash of "
              "each video's reference)")  # fmt: skip
        codes.append(run_build(args, chosen, where, settings, replace(options, holdout=holdout_record(args.val_fraction, part, chosen)),
                               num_jobs, job_index))  # fmt: skip
    return max(codes)


def run_build(args: argparse.Namespace, records: list, out_url: str, settings: ExtractionSettings, options: BuildOptions, num_jobs: int,
              job_index: int) -> int:  # fmt: skip
    """One build into ``out_url`` (a retry round, a dry run, on Ray or here), its summary and its exit status."""
    try:
        videos, out = (task_location(args.videos), task_location(out_url)) if args.distributor == "ray" else (args.videos, out_url)
        prepared, retry_round = None, None
        if args.retry_failures:
            token = retry_token() if num_jobs > 1 else None  # the tasks of one split job share a round
            retry = prepare_retry(records, videos, Store(out), settings, options, write_round=not args.dry_run, token=token)
            if retry is None:
                manifest = read_manifest(Store(out)) if Store(out).exists(MANIFEST_NAME) else None
                held = f": {manifest['num_samples']} samples in {len(manifest['shards'])} shards" if manifest else ""
                print(f"nothing to retry: no failure stands in {out_url}{held}")
                return 0
            prepared, retry_round = retry
        if args.dry_run:
            prepared = prepared or prepare_build(records, args.videos, Store(out_url), settings, options, write_plan=False)
            print(json.dumps(plan_summary(prepared)))
            return 0
        if retry_round is not None:
            print(f"retry round {retry_round}: {prepared.total_videos} failed video(s) of this job attempted again")
        if args.distributor == "ray":
            from pipeline.ray_build import build_shards_on_ray

            ray_options = RayOptions(address=args.ray_address, max_retries=args.ray_max_retries)
            report = build_shards_on_ray(records, videos, Store(out), settings, options, ray_options, prepared)
        else:
            report = build_shards(records, videos, Store(out), settings, options, prepared)
    except (AnnotationError, BuildStateError, StorageError, RayUnavailableError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if report.failed_units:
        for unit, reason in sorted(report.failed_units.items()):
            print(f"error: unit {unit} not built: {reason}", file=sys.stderr)
        print(f"{len(report.failed_units)} unit(s) failed after their retries; rerun the same command to build them", file=sys.stderr)
        return 1
    print_build_summary(report, num_jobs, job_index, out_url, args.annotations or args.videos)
    if retry_round is not None and report.units_built:
        print(f"retry round {retry_round}: {report.samples_written} of the {prepared.total_videos} retried video(s) now built, "
              f"{report.failures} still fail (failures.jsonl)")  # fmt: skip
    if report.manifest is None:  # a job of a split build: the merge of all jobs holds the whole picture
        return 0
    for line in failure_summary(Store(out), report.manifest):
        print(line, file=sys.stderr)
    verdict = build_verdict(report.manifest, args.max_failure_fraction)
    if verdict is not None:
        print(verdict, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
