"""Review media on an object store: a run on S3 keeps its review JPEGs under RUN/review/media on
the bucket, and Label Studio serves them through an S3 import storage with presigned URLs.

Task images are `s3://BUCKET/PREFIX/NAME.jpg`; Label Studio turns each into
`/tasks/ID/resolve/?fileuri=...`, which redirects a logged-in browser to a presigned GET on the
store. The storage gets the store's credentials from this process's environment (the standard
AWS variables); they are sent to Label Studio only, never written into run files or printed.

Label Studio refuses a storage whose own `s3_endpoint` is a private or loopback address (its SSRF
protection); such an endpoint is left out of the storage, and Label Studio reaches the store
through its operator endpoint, LABEL_STUDIO_S3_ENDPOINT, which `server.start` sets for the local
server from the same setting."""
from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlparse

from photogenic.pipeline.core.config.review import ReviewConfig
from photogenic.pipeline.core.storage import is_remote, protocol_of

S3_PROTOCOLS = ("s3", "s3a")


def s3_endpoint(config: ReviewConfig) -> str | None:
    """The endpoint Label Studio should reach the store at: `[review] s3_endpoint`, else the
    environment's AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else None (AWS)."""
    return (config.s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or None)


def is_private(url: str) -> bool:
    """Whether an endpoint's host is a loopback, private or link-local address."""
    host = urlparse(url).hostname or ""
    try:
        ip = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def is_s3(location) -> bool:
    return is_remote(location) and protocol_of(str(location)) in S3_PROTOCOLS


def bucket_prefix(media_dir) -> tuple[str, str]:
    """(bucket, key prefix without a trailing slash) of an s3:// folder."""
    text = str(media_dir).split("://", 1)[1]
    bucket, _, prefix = text.partition("/")
    return bucket, prefix.strip("/")


def image_url(media_dir, name: str) -> str:
    bucket, prefix = bucket_prefix(media_dir)
    return f"s3://{bucket}/{prefix}/{name}" if prefix else f"s3://{bucket}/{name}"


def storage_body(project_id: int, media_dir, config: ReviewConfig) -> dict:
    """The body of Label Studio's `POST /api/storages/s3/` for a run's media prefix."""
    bucket, prefix = bucket_prefix(media_dir)
    body = {
        "project": project_id, "title": "photogenic review media", "bucket": bucket,
        "prefix": prefix, "regex_filter": r".*\.jpg$", "use_blob_urls": True,
        "presign": True, "presign_ttl": config.presign_ttl_min, "recursive_scan": False,
        "region_name": (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                        or "us-east-1"),
    }
    endpoint = s3_endpoint(config)
    if endpoint and not is_private(endpoint):
        body["s3_endpoint"] = endpoint
    for field, var in (("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
                       ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                       ("aws_session_token", "AWS_SESSION_TOKEN")):
        if os.environ.get(var):
            body[field] = os.environ[var]
    return body
