"""Answers out of band: objects put in the operator's bucket through runpod's own `rp_upload`.

RunPod fails to post a result past about 20 MB; its SDK's answer for large outputs is object storage,
configured by the `BUCKET_ENDPOINT_URL`, `BUCKET_ACCESS_KEY_ID` and `BUCKET_SECRET_ACCESS_KEY`
variables (worker/config.py's `bucket_configured`). With them set, `Bucket.put` stores bytes with
`rp_upload.upload_in_memory_object` and returns the object's presigned URL (rp_upload's: valid a
week); without them there is no Bucket and nothing is uploaded (rp_upload would otherwise write
into a local folder and answer its path). Any storage failure is one UPLOAD_FAILED naming the
bucket and the error, never a traceback.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from worker.errors import ErrorCode, WorkerError


@dataclass(frozen=True)
class Bucket:
    """The operator's bucket; `name` empty means rp_upload's default (the month, MM-YY)."""

    name: str = ""

    @staticmethod
    def open(name: str) -> Bucket:
        """The bucket, at setup: imports rp_upload (and boto3) once, before any job."""
        import logging

        from runpod.serverless.utils import rp_upload  # noqa: F401  (boto3 behind it, imported lazily by it)

        # rp_upload wraps every object in a tqdm bar that logs its progress at INFO: one line per mask.
        logging.getLogger("tqdm_loggable.tqdm_logging").setLevel(logging.WARNING)
        return Bucket(name)

    def shown(self) -> str:
        return self.name or "rp_upload's default bucket (MM-YY)"

    def put(self, key: str, data: bytes) -> str:
        """Store `data` under `key`; returns its presigned URL. Raises WorkerError(UPLOAD_FAILED)."""
        from runpod.serverless.utils import rp_upload

        prefix, _, file_name = key.rpartition("/")
        try:
            return rp_upload.upload_in_memory_object(
                file_name, data, bucket_name=self.name or None, prefix=prefix or None
            )
        except Exception as exc:  # botocore's ClientError, EndpointConnectionError, ...: one coded error
            raise WorkerError(
                ErrorCode.UPLOAD_FAILED, f"{self.shown()}: could not put {key} ({type(exc).__name__}: {exc})"
            ) from None


def job_prefix() -> str:
    """A fresh key prefix for one job's objects: two jobs never overwrite each other's."""
    return uuid.uuid4().hex
