"""Config model of the `directory` source."""

from __future__ import annotations

import os
import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from triggerd.events.s3 import is_valid_bucket_name
from triggerd.types import InputDir, SourceConfig

EventKind = Literal["created", "modified", "deleted"]

_IPV4_RE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


class DirectorySourceConfig(SourceConfig):
    """A local directory whose file changes arrive as S3 event notifications."""

    invocation: ClassVar[Literal["sync", "async"]] = "async"

    type: Literal["directory"]
    path: InputDir = Field(
        description="Directory to watch. Relative paths are resolved against the config file."
    )
    bucket: str | None = Field(
        default=None,
        description="Synthetic bucket name in the events (default: the directory's base name, "
        "made into a valid S3 bucket name).",
    )
    include: list[str] = Field(
        default=["**"],
        description="Glob patterns on the relative POSIX path; `**` crosses directories, `*` "
        "does not. A pattern without `/` is matched against the file name alone.",
    )
    exclude: list[str] = Field(default=[], description="Glob patterns of files to leave out.")
    ignore_temporary: bool = Field(
        default=True,
        description="Leave out hidden and temporary files: `.*` (and anything under a hidden "
        "directory), `*~`, `*.tmp`, `*.swp`, `*.swx`, `*.part`, `*.crdownload`, `#*#`.",
    )
    recursive: bool = Field(default=True, description="Watch subdirectories too.")
    events: list[EventKind] = Field(
        default=["created", "modified", "deleted"],
        min_length=1,
        description="Which changes produce events (created and modified give ObjectCreated:Put, "
        "deleted gives ObjectRemoved:Delete).",
    )
    starting_position: Literal["LATEST", "TRIM_HORIZON"] = Field(
        default="LATEST",
        description="Files present at the very first start: LATEST records them as seen, "
        "TRIM_HORIZON emits ObjectCreated:Put for each.",
    )
    stable_s: float = Field(
        default=0.5,
        ge=0.0,
        description="A file is delivered once its size and mtime have not changed for this long.",
    )
    configuration_id: str = Field(default="triggerd", description="`s3.configurationId`.")
    region: str | None = Field(default=None, description="`awsRegion` (default: the daemon's).")
    account_id: str | None = Field(
        default=None, description="Bucket owner principal (default: the daemon's account id)."
    )
    poll_interval_s: float | None = Field(
        default=None,
        gt=0.0,
        description="Rescan the directory at this interval instead of using OS notifications "
        "(needed on network filesystems such as NFS or SMB, where notifications do not arrive).",
    )

    rescan_interval_s: float = Field(
        default=600.0,
        ge=0.0,
        description="With OS notifications: rescan the directory this often and deliver what "
        "the notifications missed (an inotify queue overflow, a new directory left unwatched "
        "once fs.inotify.max_user_watches is reached), logged as directory.rescan_found; 0 "
        "turns it off.",
    )

    @model_validator(mode="after")
    def _rescan_needs_notifications(self) -> DirectorySourceConfig:
        if self.poll_interval_s is not None and "rescan_interval_s" in self.model_fields_set:
            raise ValueError(
                "rescan_interval_s applies to OS notifications; with poll_interval_s every "
                "poll is a rescan: set one of them"
            )
        return self

    @field_validator("bucket")
    @classmethod
    def _valid_bucket(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_bucket_name(value):
            raise ValueError(
                "not a valid S3 bucket name (3-63 characters: lower-case letters, digits, "
                "'.' and '-', starting and ending with a letter or digit)"
            )
        return value

    @field_validator("path", mode="before")
    @classmethod
    def _non_empty_path(cls, value: object) -> object:
        if value == "":
            raise ValueError("must not be empty")
        return value


def bucket_name_for(path: str) -> str:
    """A valid S3 bucket name made from a directory's base name.

    Lower-cased; characters other than letters, digits, `.` and `-` become `-`; runs collapse;
    leading/trailing punctuation goes; names shorter than 3 characters get `-bucket` appended;
    at most 63 characters.
    """
    base = os.path.basename(os.path.normpath(os.path.abspath(path)))
    name = re.sub(r"[^a-z0-9.-]+", "-", base.lower())
    name = re.sub(r"\.{2,}", ".", name)
    name = re.sub(r"-{2,}", "-", name)
    if _IPV4_RE.match(name):
        name = name.replace(".", "-")
    name = name.strip(".-")
    if not name:
        name = "directory"
    if len(name) < 3:
        name += "-bucket"
    return name[:63].rstrip(".-")
