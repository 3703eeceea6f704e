"""Say what is wrong with a storage location, fast and precisely, before anything heavy runs.

A wrong bucket, missing credentials, an unreachable endpoint and a typo in a prefix used to
surface as one vague message ("bucket does not exist or is not reachable") after s3fs's own
retries (28 s for an unreachable endpoint), or, for a mistyped ``--train-shards``, as advice to
pass ``--steps-per-epoch`` and a failure after CLIP had loaded. ``probe_location`` makes one
request with short timeouts and no retries and names the cause: no credentials, endpoint not
reachable, no such bucket, access denied, nothing under the prefix.
"""

from __future__ import annotations

import os

import braceexpand
import fsspec

from shards.storage_errors import StorageError

PROBE_TIMEOUT_S = 5.0


def _first_url(location: str) -> str:
    return next(iter(braceexpand.braceexpand(location))) if "{" in location else location


def _s3_cause(error: BaseException, url: str, bucket: str, fs) -> str | None:
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

    endpoint = getattr(getattr(fs, "s3", None), "meta", None)
    endpoint = endpoint.endpoint_url if endpoint else (os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint")
    if isinstance(error, NoCredentialsError):
        return f"{url}: no S3 credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
    if isinstance(error, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return f"{url}: cannot reach the S3 endpoint {endpoint} ({type(error).__name__}; check AWS_ENDPOINT_URL and the network)"
    if isinstance(error, FileNotFoundError):
        return f"{url}: bucket {bucket!r} does not exist at {endpoint}"
    if isinstance(error, PermissionError):
        return f"{url}: access to bucket {bucket!r} denied (the credentials lack list permission on it)"
    return None


def probe_location(location: str, must_exist: bool) -> None:
    """Raises StorageError naming the cause when ``location`` cannot be used.

    ``must_exist``: an input (shards, a checkpoint folder): something must be there. Otherwise an
    output: only its bucket (or, locally, a creatable parent) must be there.
    """
    url = _first_url(location).rstrip("/")
    if "://" not in url or url.startswith("file://"):
        path = url.removeprefix("file://")
        if must_exist and not os.path.exists(path):
            raise StorageError(f"{location}: no such file or folder")
        return
    protocol = url.split("://", 1)[0]
    options: dict = {"skip_instance_cache": True}  # a fresh client sees the current environment (endpoint, keys)
    if protocol in ("s3", "s3a"):
        options["config_kwargs"] = {"connect_timeout": PROBE_TIMEOUT_S, "read_timeout": PROBE_TIMEOUT_S, "retries": {"max_attempts": 1}}
    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as error:
        raise StorageError(f"{location}: unsupported storage URL ({error})") from error
    bucket = root.split("/")[0]
    try:
        fs.ls(bucket, refresh=True)
        found = fs.exists(root) if must_exist and root != bucket else True
    except Exception as error:  # noqa: BLE001 - each backend raises its own types; the known ones get a precise message
        cause = _s3_cause(error, location, bucket, fs) if protocol in ("s3", "s3a") else None
        raise StorageError(cause or f"{location}: cannot be read ({type(error).__name__}: {error})") from error
    if not found:
        raise StorageError(f"{location}: nothing under this prefix in bucket {bucket!r} (a typo in the path?)")
