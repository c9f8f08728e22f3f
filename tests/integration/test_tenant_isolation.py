"""No code path reads one tenant's data with another tenant's id."""

from __future__ import annotations

import json

import boto3
import pytest

from emailrouter.queues.rawstore import RawMailStore
from emailrouter.tenancy.errors import SecretAccessError
from emailrouter.tenancy.secrets import TenantSecrets


def test_raw_mail_of_one_tenant_cannot_be_read_with_another_tenants_id(aws: boto3.Session) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="raw", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    store = RawMailStore("raw", s3)
    key = store.put("alpha", "inbox", b"From: a@b\r\n\r\nsecret of alpha\r\n")

    assert key.startswith("raw/alpha/inbox/")
    assert store.get("alpha", key).endswith(b"secret of alpha\r\n")
    with pytest.raises(PermissionError):
        store.get("beta", key)


def test_a_tenant_cannot_read_another_tenants_secret(aws: boto3.Session) -> None:
    sm = aws.client("secretsmanager")
    sm.create_secret(Name="emailrouter/alpha/crm", SecretString=json.dumps({"token": "alpha-token"}))
    secrets = TenantSecrets(sm)

    assert secrets.get("alpha", "emailrouter/alpha/crm") == {"token": "alpha-token"}
    with pytest.raises(SecretAccessError) as refused:
        secrets.get("beta", "emailrouter/alpha/crm")
    assert "alpha-token" not in str(refused.value)


def test_unreadable_secret_error_names_the_secret_not_its_value(aws: boto3.Session) -> None:
    sm = aws.client("secretsmanager")
    sm.create_secret(Name="emailrouter/alpha/broken", SecretString="password=hunter2")

    with pytest.raises(SecretAccessError) as error:
        TenantSecrets(sm).get("alpha", "emailrouter/alpha/broken")
    assert "hunter2" not in str(error.value) and "emailrouter/alpha/broken" in str(error.value)
    with pytest.raises(SecretAccessError, match="emailrouter/alpha/missing"):
        TenantSecrets(sm).get("alpha", "emailrouter/alpha/missing")
