"""Safe unpacking of downloaded dataset archives (zip and tar, any compression tarfile reads).

Archives are checked member by member before anything is written: absolute names, ``..``
components, links (symbolic or hard) and device/FIFO entries are refused, so an archive cannot
write outside its target folder (the "zip slip" / tar path-traversal attacks, CVE-2007-4559).
For tar files Python's own ``filter="data"`` (PEP 706) is applied on top as a second guard.
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from irc.errors import IrcError

__all__ = ["extract_archive"]


def _check_name(archive: Path, name: str) -> None:
    """Refuses member names that could land outside the extraction folder."""
    posix = PurePosixPath(name.replace("\\", "/"))
    win = PureWindowsPath(name)
    if posix.is_absolute() or win.is_absolute() or win.drive or ".." in posix.parts:
        raise IrcError(f"refusing to unpack {archive}: member {name!r} points outside the target folder")


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            _check_name(archive, info.filename)
            mode = (info.external_attr >> 16) & 0o170000
            if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise IrcError(f"refusing to unpack {archive}: member {info.filename!r} is a link or special file")
        for info in members:
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise IrcError(f"refusing to unpack {archive}: member {info.filename!r} points outside the target folder")
            zf.extract(info, dest)


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for m in members:
            _check_name(archive, m.name)
            if not (m.isfile() or m.isdir()):
                raise IrcError(f"refusing to unpack {archive}: member {m.name!r} is a link or special file")
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, members=members, filter="data")
        else:  # Python < 3.11.4: the checks above already refused every dangerous member
            tf.extractall(dest, members=members)


def extract_archive(archive: Path, dest: Path) -> None:
    """Unpacks ``archive`` (zip or tar, detected from its content) into the folder ``dest``.

    Raises:
        IrcError: Not an archive, a corrupt one, or a member that is unsafe (see module doc).
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, dest)
        else:
            raise IrcError(f"{archive}: not a zip or tar archive")
    except IrcError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
        raise IrcError(f"{archive}: cannot unpack ({err})") from err
