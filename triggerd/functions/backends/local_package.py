"""A function's files as Lambda lays them out: its code (a directory, or a deployment .zip
extracted into the work dir) and its layers merged into an `/opt`-equivalent directory.

Everything built here is keyed by a fingerprint of its inputs (a .zip's content hash, a
directory's file names, sizes and modification times), built in a temporary directory and
renamed into place, so an unchanged input costs a scan and a half-built result is never used.
These functions block (file I/O): callers run them in a thread.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Sequence

from triggerd.types import ConfigError

#: Lambda's limit on a function's unzipped code and layers.
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
#: Lambda's limit on layers per function.
MAX_LAYERS = 5
_CHUNK = 1024 * 1024


class PackageError(Exception):
    """A code package or layer that cannot be used (bad zip, over the size limit)."""


def is_zip(path: str) -> bool:
    return path.lower().endswith(".zip")


def check_source(path: str, what: str) -> list[str]:
    """Problems with a code or layer path (a directory or a .zip file)."""
    if is_zip(path):
        return [] if os.path.isfile(path) else [f"{what}: {path} does not exist"]
    return [] if os.path.isdir(path) else [f"{what}: {path} is not a directory or a .zip file"]


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_fingerprint(path: str) -> str:
    """Names, sizes, modes and modification times of every file under `path`."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, path)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mode}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def source_fingerprint(path: str) -> str:
    return file_digest(path) if is_zip(path) else tree_fingerprint(path)


def _member_target(root: str, name: str) -> str:
    target = os.path.normpath(os.path.join(root, name))
    if os.path.isabs(name) or not (target == root or target.startswith(root + os.sep)):
        raise PackageError(f"entry {name!r} points outside the package")
    return target


def extract_zip(archive: str, dest: str) -> None:
    """Extract `archive` into `dest` (files of earlier layers are overwritten), keeping
    executable bits and symbolic links; entries escaping `dest` are refused."""
    root = os.path.abspath(dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            total = sum(m.file_size for m in members)
            if total > MAX_UNZIPPED_BYTES:
                raise PackageError(
                    f"unzips to {total} bytes, over Lambda's {MAX_UNZIPPED_BYTES} bytes"
                )
            for info in members:
                _extract_member(zf, info, root)
    except (zipfile.BadZipFile, OSError) as e:
        raise PackageError(f"cannot be extracted: {e}") from e


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, root: str) -> None:
    target = _member_target(root, info.filename)
    mode = info.external_attr >> 16
    if info.is_dir():
        os.makedirs(target, exist_ok=True)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.lexists(target) and not os.path.isdir(target):
        os.unlink(target)
    if stat.S_ISLNK(mode):
        link = zf.read(info).decode()
        resolved = os.path.normpath(os.path.join(os.path.dirname(target), link))
        if os.path.isabs(link) or not resolved.startswith(root + os.sep):
            raise PackageError(f"link {info.filename!r} points outside the package")
        os.symlink(link, target)
        return
    with zf.open(info) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)
    os.chmod(target, (mode & 0o777) or 0o644)


def _copy_into(source: str, dest: str) -> None:
    if is_zip(source):
        extract_zip(source, dest)
    else:
        shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=True)


def _build(dest: str, prefix: str, sources: Iterable[str]) -> str:
    """Build `dest` from `sources` (in order) in a temporary directory, rename it into place
    and remove older builds with the same prefix. Returns `dest`."""
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    if not os.path.isdir(dest):
        tmp = tempfile.mkdtemp(prefix=".building-", dir=parent)
        try:
            for source in sources:
                try:
                    _copy_into(source, tmp)
                except PackageError as e:
                    raise PackageError(f"{source} {e}") from e
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, dest)
            except OSError:
                if not os.path.isdir(dest):  # not another process's identical build
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for name in os.listdir(parent):
        old = os.path.join(parent, name)
        if name.startswith(prefix) and old != dest:
            shutil.rmtree(old, ignore_errors=True)
    return dest


def prepare_code(code: str, work_dir: str) -> str:
    """The code directory: `code` itself, or the .zip extracted under `work_dir` (again only
    when its content changed)."""
    if not is_zip(code):
        return os.path.abspath(code)
    digest = file_digest(code)[:20]
    return _build(os.path.abspath(os.path.join(work_dir, "code-" + digest)), "code-", [code])


def prepare_opt(layers: Sequence[str], work_dir: str) -> str:
    """The function's `/opt`: its layers merged in order (later layers overwrite earlier
    files, as Lambda does), rebuilt when a layer changed."""
    h = hashlib.sha256()
    for layer in layers:
        h.update(f"{os.path.abspath(layer)}\0{source_fingerprint(layer)}\n".encode())
    dest = os.path.abspath(os.path.join(work_dir, "opt-" + h.hexdigest()[:20]))
    return _build(dest, "opt-", layers)


def check_layers(layers: Sequence[str], where: str) -> None:
    problems = []
    for i, layer in enumerate(layers):
        problems += check_source(layer, f"{where}layers[{i}]")
    if problems:
        raise ConfigError(problems)
