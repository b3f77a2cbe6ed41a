"""Artifacts as objects in an S3(-compatible) bucket; devices fetch them with presigned GETs.

Uploads go up from the staged file with boto3's managed transfer: multipart in 8 MiB parts
above 8 MiB, never the whole artifact in memory.
"""
from pathlib import Path
from typing import BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

MEDIA_TYPE = "application/vnd.mender-artifact"


class S3Storage:
    staging_dir = None

    def __init__(self, bucket: str, prefix: str = "", **client_options):
        self.bucket, self.prefix = bucket, prefix
        client_options.setdefault("config", Config(signature_version="s3v4"))
        self.client = boto3.client("s3", **client_options)

    def put(self, key: str, staged: Path) -> None:
        self.client.upload_file(str(staged), self.bucket, self.prefix + key,
                                ExtraArgs={"ContentType": MEDIA_TYPE})
        staged.unlink()

    def open(self, key: str) -> BinaryIO:
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]

    def size(self, key: str) -> int:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey"):
                raise FileNotFoundError(key) from None
            raise
        return head["ContentLength"]

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def download_url(self, key: str, seconds: int) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.prefix + key},
            ExpiresIn=seconds)
