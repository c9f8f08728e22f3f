"""Raw MIME in S3: the claim check for large messages and the kept copy of quarantined ones."""

from __future__ import annotations

import hashlib
from typing import Any

from emailrouter import aws
from emailrouter.config import get_settings


class RawMailStore:
    """Keys always start with the tenant: `raw/<tenant>/<mailbox>/<sha256>.eml`."""

    def __init__(self, bucket: str | None = None, client: Any | None = None) -> None:
        self._bucket = bucket or get_settings().raw_mail_bucket
        self._s3 = client or aws.client("s3")

    @staticmethod
    def key_for(tenant_id: str, mailbox_id: str, raw: bytes, kind: str = "raw") -> str:
        digest = hashlib.sha256(raw).hexdigest()
        return f"{kind}/{tenant_id}/{mailbox_id}/{digest}.eml"

    def put(self, tenant_id: str, mailbox_id: str, raw: bytes, kind: str = "raw") -> str:
        key = self.key_for(tenant_id, mailbox_id, raw, kind)
        self._s3.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=raw,
            ContentType="message/rfc822",
            ServerSideEncryption="AES256",
            Metadata={"tenant-id": tenant_id, "mailbox-id": mailbox_id},
        )
        return key

    def get(self, tenant_id: str, key: str) -> bytes:
        _check_owner(tenant_id, key)
        return bytes(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())

    def size(self, tenant_id: str, key: str) -> int:
        """The object's length from a HEAD request: nothing of it is read."""
        _check_owner(tenant_id, key)
        return int(self._s3.head_object(Bucket=self._bucket, Key=key)["ContentLength"])

    def get_head(self, tenant_id: str, key: str, limit: int) -> bytes:
        """At most the first `limit` bytes (a ranged GET): enough for a header block."""
        _check_owner(tenant_id, key)
        response = self._s3.get_object(Bucket=self._bucket, Key=key, Range=f"bytes=0-{limit - 1}")
        return bytes(response["Body"].read(limit))

    def keep(self, tenant_id: str, key: str, kind: str) -> str:
        """Copy an object under another kind (`quarantine/…`) inside S3, without reading it here."""
        _check_owner(tenant_id, key)
        target = "/".join([kind, *key.split("/")[1:]])
        if target != key:
            self._s3.copy_object(
                Bucket=self._bucket,
                Key=target,
                CopySource={"Bucket": self._bucket, "Key": key},
                ServerSideEncryption="AES256",
            )
        return target

    @staticmethod
    def digest_of(key: str) -> str:
        """The SHA-256 of the content, which every key ends with."""
        return key.rsplit("/", 1)[-1].removesuffix(".eml")

    def delete(self, tenant_id: str, key: str) -> None:
        _check_owner(tenant_id, key)
        self._s3.delete_object(Bucket=self._bucket, Key=key)


def _check_owner(tenant_id: str, key: str) -> None:
    if not key.split("/")[1:2] == [tenant_id]:
        raise PermissionError(f"raw mail key {key!r} does not belong to tenant {tenant_id}")
