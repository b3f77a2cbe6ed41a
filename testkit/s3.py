"""moto's S3 server, in its own process on a loopback port: the S3 artifact storage against a
real S3-compatible endpoint."""
import subprocess
import sys

import boto3
import requests

from testkit import free_port, terminate, wait_for

# What boto3 (in the test, and in tern-server, which inherits the environment) signs with.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "tern", "AWS_SECRET_ACCESS_KEY": "tern-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    """`python -m moto.server`; `url` is its endpoint. The caller puts CREDENTIALS in the
    environment of whatever talks to it. As a context manager: started, then stopped."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "S3Server":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(self._answers, timeout=60, interval=0.2, what="moto_server")
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        try:
            return requests.get(self.url, timeout=5).ok
        except (requests.ConnectionError, requests.Timeout):  # starting, or busy
            return False

    def create_bucket(self, name: str) -> None:
        boto3.client("s3", endpoint_url=self.url, **{
            "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "region_name": CREDENTIALS["AWS_DEFAULT_REGION"]}).create_bucket(Bucket=name)

    def stop(self) -> None:
        terminate(self.process)

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
