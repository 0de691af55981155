"""Where a results folder lives: a local path or a URI (s3://bucket/prefix), through pyarrow.fs.

pyarrow's `FileSystem.from_uri` takes endpoint, credentials and region the standard AWS ways (environment
variables such as AWS_ENDPOINT_URL, ~/.aws files, instance roles) or as URI query parameters
(`s3://bucket/prefix?endpoint_override=host:9000&scheme=http`). Paths inside a Location are relative to
its root and use "/".

`from_uri` takes no timeouts, and with the AWS SDK's defaults each call to an endpoint that refuses the
connection fails only after 6.0 s (median of 8 `get_file_info` calls to a closed port, pyarrow 26), several
such calls before the real error. So the S3 filesystem it returns is rebuilt with the same options (its
pickling state, which is every constructor argument it set from the URI's query parameters and the
environment) plus CONNECT_TIMEOUT_S and S3_ATTEMPTS (pyarrow's AwsStandardS3RetryStrategy): such a call
then fails in 0.9-2.5 s (median 2.0 s, same measurement), and the readers turn that first failure into
one `unreadable(...)` line. Three attempts still ride out a throttled or briefly failing request. A host
that never answers costs each attempt up to CONNECT_TIMEOUT_S more (not measured: this machine's network
answers every outside address).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from aal_sweep.errors import AalError

CONNECT_TIMEOUT_S = 2.0  # a TCP connect to S3 takes milliseconds; a dead host never answers
REQUEST_TIMEOUT_S = 60.0  # a socket read (the SDK applies it on Windows and macOS; curl's own limits on Linux)
S3_ATTEMPTS = 3  # each call, first try included


def unreadable(where: str, error: OSError) -> AalError:
    """The one-line error for results storage that cannot be read: a bad path, an unreachable endpoint,
    refused credentials or no such bucket."""
    return AalError(
        f"{where}: cannot read it ({cause(error)}); check the path, or for "
        f"s3:// the endpoint and credentials (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
        f"AWS_SECRET_ACCESS_KEY)"
    )


def cause(error: OSError) -> str:
    """The part of an error that says what happened, whole: pyarrow's S3 errors put it after "AWS Error",
    followed by a request id that says nothing to a user."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "AWS Error" in text:
        text = text[text.index("AWS Error") :].split("; Details", 1)[0].split(" (Request ID:", 1)[0]
    return text if len(text) <= 300 else text[:300].rsplit(" ", 1)[0] + " ..."


def shown_uri(text: str) -> str:
    """A results location as it is shown and recorded (sweep.yaml): an absolute local path, or the URI
    without its query parameters, which may hold credentials."""
    if "://" in text:
        return text.split("?", 1)[0].rstrip("/")
    return str(Path(text).expanduser().resolve())


def _with_region(uri: str) -> str:
    """An s3:// URI without an endpoint or region makes `from_uri` ask AWS for the bucket's region (a network
    call with the SDK's default retries); the standard AWS_REGION / AWS_DEFAULT_REGION answer it locally."""
    if not uri.startswith("s3://"):
        return uri
    query = uri.split("?", 1)[1] if "?" in uri else ""
    keys = {kv.split("=", 1)[0] for kv in query.split("&") if kv}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if (
        not region
        or keys & {"region", "endpoint_override"}
        or os.environ.get("AWS_ENDPOINT_URL")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
    ):
        return uri
    return f"{uri}{'&' if query else '?'}region={region}"


def _with_timeouts(fs: pafs.FileSystem) -> pafs.FileSystem:
    """The same S3 filesystem (endpoint, scheme, region, credentials, proxy: every option `from_uri` set,
    from the URI or the environment) with our connect timeout and retry strategy."""
    if not isinstance(fs, pafs.S3FileSystem):
        return fs
    _rebuild, (options,) = fs.__reduce__()
    options = dict(
        options,
        connect_timeout=CONNECT_TIMEOUT_S,
        request_timeout=REQUEST_TIMEOUT_S,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS),
    )
    if not (options.get("proxy_options") or {}).get("host"):
        options.pop("proxy_options", None)  # no proxy: its empty record is not a valid argument everywhere
    return pafs.S3FileSystem(**options)


class Location:
    def __init__(self, uri: str | os.PathLike):
        text = str(uri)
        if "://" in text:
            try:
                self.fs, root = pafs.FileSystem.from_uri(_with_region(text))
                self.fs = _with_timeouts(self.fs)
            except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid is a ValueError
                raise AalError(
                    f"results {text!r}: cannot open it ({str(e).splitlines()[0][:160]}); expected a "
                    f"local path or s3://BUCKET/PREFIX"
                ) from None
            self.local = isinstance(self.fs, pafs.LocalFileSystem)
            self.root = root.rstrip("/") or root
            self.uri = shown_uri(text)
            if not self.root.strip("/"):
                raise AalError(f"results {text!r}: no bucket named (expected s3://BUCKET/PREFIX)")
        else:
            self.fs = pafs.LocalFileSystem()
            self.local = True
            self.root = str(Path(text).expanduser().resolve())
            self.uri = self.root  # shown_uri(text), the same
            text = self.root  # trials run in other working directories: hand them the absolute path
        self.source = text  # what to hand to another process (workers re-open it)

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def check_bucket(self) -> None:
        """An object store's bucket exists: a run refuses a missing one before it starts Ray (its first write,
        the lease's, would find out only after). One HEAD request; nothing for a local folder."""
        if self.local:
            return
        bucket = self.root.split("/", 1)[0]
        try:
            found = self.fs.get_file_info(bucket).type != pafs.FileType.NotFound
        except OSError as e:
            raise unreadable(self.uri, e) from None
        if not found:
            endpoint = self.fs.__reduce__()[1][0].get("endpoint_override") or "the default AWS endpoint"
            raise AalError(
                f"{self.uri}: there is no bucket {bucket!r} at {endpoint}; create it (e.g. `aws s3 mb "
                f"s3://{bucket}`), or point results / --results at a bucket that exists"
            )

    def path(self, rel: str = "") -> str:
        """The filesystem path of `rel` (for pyarrow calls with `self.fs`)."""
        return f"{self.root}/{rel}" if rel else self.root

    def show(self, rel: str = "") -> str:
        """`rel` as a user reads it in messages: a local path or s3://bucket/key (no query parameters)."""
        return f"{self.uri}/{rel}" if rel else self.uri

    # ---- reading -----------------------------------------------------------------------------------

    def info(self, rel: str = "") -> pafs.FileInfo:
        return self.fs.get_file_info(self.path(rel))

    def is_file(self, rel: str) -> bool:
        return self.info(rel).type == pafs.FileType.File

    def is_dir(self, rel: str = "") -> bool:
        return self.info(rel).type == pafs.FileType.Directory

    def list(self, rel: str = "", recursive: bool = False) -> list[pafs.FileInfo]:
        """The entries under `rel` (none when it does not exist)."""
        return self.fs.get_file_info(pafs.FileSelector(self.path(rel), allow_not_found=True, recursive=recursive))

    def name(self, info: pafs.FileInfo) -> str:
        """An entry's path relative to the root."""
        return info.path[len(self.root) + 1 :] if info.path.startswith(self.root + "/") else info.path

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    # ---- writing -----------------------------------------------------------------------------------

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole file that appears complete or not at all.

        Local: a hidden temporary file beside it, then rename. It is opened with mode 0666 so the umask
        decides (0644 usually); tempfile.mkstemp would make it 0600, unreadable to colleagues and to Ray
        workers running as another user. Object stores: one PUT is atomic per object (a multipart upload
        appears only when completed), so the object is written in place."""
        if not self.local:
            with self.fs.open_output_stream(self.path(rel)) as f:
                f.write(data)
            return
        path = self.path(rel)
        folder, base = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{base}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def delete(self, rel: str) -> None:
        """Delete a file; a file already gone is fine."""
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    def delete_dir(self, rel: str) -> None:
        if self.info(rel).type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(rel))

    def move(self, src: str, dst: str) -> None:
        """Rename (local: atomic; object stores: copy then delete)."""
        if self.local:
            os.makedirs(os.path.dirname(self.path(dst)), exist_ok=True)
        self.fs.move(self.path(src), self.path(dst))

    def make_dir(self, rel: str = "") -> None:
        self.fs.create_dir(self.path(rel), recursive=True)
