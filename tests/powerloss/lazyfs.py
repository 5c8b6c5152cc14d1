"""A FUSE filesystem that forgets what was not made durable: power loss on demand.

The ALICE (OSDI'14) / LazyFS idea, small enough to read: the filesystem a program sees holds
every change in memory (like a page cache) and only what the program made durable reaches the
*backing directory* on the real disk:

- file data (writes, truncates) becomes durable when the file is fsync'd or fdatasync'd;
- a name (create, mkdir, symlink, link, rename, unlink, rmdir) becomes durable only when its
  directory is fsync'd (open the directory, fsync the descriptor): the directory's whole
  listing as it is then is made durable, each directory on its own.

Cutting the power (`Mount.cut`) writes `cut` to the control file `/.lazyfs-control`: from that
request on, the filesystem answers every call with EIO and persists nothing, exactly as if the
machine stopped between two requests. The owner then kills every process, unmounts, and
mounts again from the backing directory: the new view is the durable state and nothing else.

Where this is stricter than ext4 (data=ordered, the default), on purpose, so a missing fsync
shows up here instead of on an unlucky machine:

- ext4's fsync of a *newly created* file also commits its directory entry (and new parent
  directories); here the name is durable only after its directory's own fsync, as POSIX and
  the ALICE model say (XFS and btrfs promise no more).
- ext4 commits metadata in global order (a later rename never survives without an earlier
  one); here each directory is made durable on its own, in any order.
- ext4's `auto_da_alloc` flushes a file's data when it is renamed over another one; here data
  that was never fsync'd is lost even then (the new name points at an empty file).
- A symlink's target is durable with its name (it lives in the inode, written with the entry).

Optionally (`writeback=True` at the cut), some un-synced state survives, as the kernel's
background writeback would have saved it: each directory with pending changes keeps them with
probability one half, and each file whose pending data extends what is durable (an append)
keeps a random prefix of it, which tears a final line in the middle. Both outcomes are legal
after a power loss, so a program must survive both.

Backing layout (`BACKING/`): `ino/<n>.meta` (kind, mode, symlink target), `ino/<n>.data` (a
file's durable bytes), `ino/<n>.dir` (a directory's durable listing, JSON `{name: ino}`); the
root is inode 1. Inodes not reachable from the root at mount time were never named durably
and are deleted. `acked/` holds, for every file named `journal.jsonl`, the content its last
fsync returned for (the path with `/` as `%`): what the program was told is on disk.

Run as `python lazyfs.py BACKING MOUNTPOINT` (foreground; unmount to stop). Needs /dev/fuse,
libfuse 3 (Debian `fuse3`) and `mfusepy`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

CONTROL = ".lazyfs-control"
ACKED_NAME = "journal.jsonl"  # files whose fsync'd content is also copied to BACKING/acked/
ROOT_INO = 1


def fuse_unavailable() -> str | None:
    """Why a FUSE power-loss run cannot happen here, or None when it can."""
    if os.geteuid() != 0:
        return "the FUSE power-loss tests mount a filesystem, which needs root"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (load the fuse module: modprobe fuse)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy or libfuse 3 is missing ({exc}): install the dev extra and Debian's fuse3"
    return None


# ---- the in-memory view --------------------------------------------------------------------


@dataclass
class Node:
    kind: str  # "file" | "dir" | "symlink"
    mode: int
    data: bytearray = field(default_factory=bytearray)
    entries: dict[str, int] = field(default_factory=dict)
    target: str = ""
    nlink: int = 0
    mtime_ns: int = field(default_factory=time.time_ns)


class LazyFS:
    """The filesystem's rules, without FUSE: paths in, bytes out, durability on fsync."""

    def __init__(self, backing: Path, seed: int | None = None) -> None:
        self.backing = backing
        self.inodes = backing / "ino"
        self.inodes.mkdir(parents=True, exist_ok=True)
        self.nodes: dict[int, Node] = {}
        self.handles: dict[int, int] = {}  # file handle -> inode
        self.next_fh = 1
        self.dirty_data: set[int] = set()  # files written since their last fsync
        self.dirty_dirs: set[int] = set()  # directories changed since their last fsync
        self.durable_sizes: dict[int, int] = {}
        self.powered = True
        self.lock = threading.Lock()
        self.random = random.Random(seed)
        self._load()

    # -- loading the durable state --

    def _load(self) -> None:
        if not (self.inodes / f"{ROOT_INO}.meta").exists():
            self._write_meta(ROOT_INO, Node("dir", 0o755))
            self._write_backing(f"{ROOT_INO}.dir", b"{}")
        reachable: set[int] = set()
        todo = [ROOT_INO]
        while todo:
            ino = todo.pop()
            if ino in reachable:
                if self.nodes[ino].kind == "file":
                    self.nodes[ino].nlink += 1
                continue
            reachable.add(ino)
            meta = json.loads((self.inodes / f"{ino}.meta").read_bytes())
            node = Node(meta["kind"], meta["mode"], target=meta.get("target", ""), nlink=1)
            if node.kind == "file":
                with contextlib.suppress(FileNotFoundError):
                    node.data = bytearray((self.inodes / f"{ino}.data").read_bytes())
                self.durable_sizes[ino] = len(node.data)
            elif node.kind == "dir":
                with contextlib.suppress(FileNotFoundError):
                    node.entries = json.loads((self.inodes / f"{ino}.dir").read_bytes())
                todo.extend(node.entries.values())
            self.nodes[ino] = node
        # Inode numbers are never reused, even those of files that never got a durable name:
        # their data must not come back under a new file's name.
        known = [int(p.name.split(".")[0]) for p in self.inodes.iterdir() if p.name[0].isdigit()]
        self.next_ino = max([ROOT_INO, *known]) + 1
        for path in self.inodes.iterdir():
            if path.name[0].isdigit() and int(path.name.split(".")[0]) not in reachable:
                path.unlink()
        for ino in self.nodes:
            if self.nodes[ino].kind == "dir":
                self.nodes[ino].nlink = 2 + sum(
                    self.nodes[c].kind == "dir" for c in self.nodes[ino].entries.values()
                )

    # -- writing the durable state --

    def _write_backing(self, name: str, data: bytes) -> None:
        tmp = self.inodes / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.inodes / name)

    def _write_meta(self, ino: int, node: Node) -> None:
        meta: dict[str, Any] = {"kind": node.kind, "mode": node.mode}
        if node.kind == "symlink":
            meta["target"] = node.target
        self._write_backing(f"{ino}.meta", json.dumps(meta).encode())

    def _persist_file(self, ino: int, data: bytes) -> None:
        self._write_meta(ino, self.nodes[ino])
        self._write_backing(f"{ino}.data", data)
        self.durable_sizes[ino] = len(data)

    def _persist_dir(self, ino: int) -> None:
        entries = self.nodes[ino].entries
        for child in entries.values():
            if not (self.inodes / f"{child}.meta").exists():
                self._write_meta(child, self.nodes[child])
        self._write_meta(ino, self.nodes[ino])
        self._write_backing(f"{ino}.dir", json.dumps(entries).encode())

    def fsync_inode(self, ino: int, path: str | None = None) -> None:
        node = self.nodes[ino]
        if node.kind == "dir":
            self._persist_dir(ino)
            self.dirty_dirs.discard(ino)
        elif node.kind == "file":
            self._persist_file(ino, bytes(node.data))
            self.dirty_data.discard(ino)
            if path is not None and path.endswith("/" + ACKED_NAME):
                # What the program is told is on disk: kept outside the filesystem, so a
                # check after the cut can tell what was acknowledged from what survived.
                acked = self.backing / "acked"
                acked.mkdir(exist_ok=True)
                (acked / path.strip("/").replace("/", "%")).write_bytes(bytes(node.data))

    def sync(self) -> None:
        """A clean unmount (or `sync`): everything pending becomes durable."""
        for ino in sorted(self.dirty_data):
            if ino in self.nodes:
                self._persist_file(ino, bytes(self.nodes[ino].data))
        for ino in sorted(self.dirty_dirs):
            self._persist_dir(ino)
        self.dirty_data.clear()
        self.dirty_dirs.clear()

    def cut(self, writeback: bool) -> dict[str, int]:
        """The power goes: persist nothing more, except what background writeback saved."""
        saved = {"dirs": 0, "files": 0}
        if writeback:
            for ino in sorted(self.dirty_dirs):
                if self.random.random() < 0.5:
                    self._persist_dir(ino)
                    saved["dirs"] += 1
            for ino in sorted(self.dirty_data):
                node = self.nodes[ino]
                durable = self.durable_sizes.get(ino, 0)
                if len(node.data) > durable and self.random.random() < 0.5:
                    keep = self.random.randint(durable, len(node.data))
                    self._persist_file(ino, bytes(node.data[:keep]))
                    saved["files"] += 1
        self.powered = False
        return saved

    # -- the namespace --

    def lookup(self, path: str) -> int:
        ino = ROOT_INO
        for part in path.split("/"):
            if not part:
                continue
            node = self.nodes[ino]
            if node.kind != "dir":
                raise OSError(errno.ENOTDIR, path)
            try:
                ino = node.entries[part]
            except KeyError:
                raise OSError(errno.ENOENT, path) from None
        return ino

    def parent_of(self, path: str) -> tuple[int, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self.lookup(head)
        if self.nodes[parent].kind != "dir":
            raise OSError(errno.ENOTDIR, path)
        return parent, name

    def add_entry(self, path: str, node: Node) -> int:
        parent, name = self.parent_of(path)
        if name in self.nodes[parent].entries:
            raise OSError(errno.EEXIST, path)
        ino = self.next_ino
        self.next_ino += 1
        node.nlink = 2 if node.kind == "dir" else 1
        self.nodes[ino] = node
        self._link(parent, name, ino)
        if node.kind == "dir":
            self.nodes[parent].nlink += 1
        return ino

    def _link(self, parent: int, name: str, ino: int) -> None:
        self.nodes[parent].entries[name] = ino
        self.nodes[parent].mtime_ns = time.time_ns()
        self.dirty_dirs.add(parent)

    def _unlink(self, parent: int, name: str) -> int:
        ino = self.nodes[parent].entries.pop(name)
        self.nodes[parent].mtime_ns = time.time_ns()
        self.dirty_dirs.add(parent)
        self.nodes[ino].nlink -= 1
        return ino

    def remove(self, path: str, want_dir: bool) -> None:
        parent, name = self.parent_of(path)
        ino = self.lookup(path)
        node = self.nodes[ino]
        if want_dir and node.kind != "dir":
            raise OSError(errno.ENOTDIR, path)
        if not want_dir and node.kind == "dir":
            raise OSError(errno.EISDIR, path)
        if want_dir and node.entries:
            raise OSError(errno.ENOTEMPTY, path)
        self._unlink(parent, name)
        if want_dir:
            self.nodes[parent].nlink -= 1

    def rename(self, old: str, new: str) -> None:
        old_parent, old_name = self.parent_of(old)
        new_parent, new_name = self.parent_of(new)
        ino = self.lookup(old)
        moving = self.nodes[ino]
        existing = self.nodes[new_parent].entries.get(new_name)
        if existing == ino:
            return
        if existing is not None:
            target = self.nodes[existing]
            if target.kind == "dir":
                if moving.kind != "dir":
                    raise OSError(errno.EISDIR, new)
                if target.entries:
                    raise OSError(errno.ENOTEMPTY, new)
                self.nodes[new_parent].nlink -= 1
            elif moving.kind == "dir":
                raise OSError(errno.ENOTDIR, new)
            self._unlink(new_parent, new_name)
        self._unlink(old_parent, old_name)
        moving.nlink += 1
        self._link(new_parent, new_name, ino)
        if moving.kind == "dir" and old_parent != new_parent:
            self.nodes[old_parent].nlink -= 1
            self.nodes[new_parent].nlink += 1

    def link(self, existing: str, new: str) -> None:
        ino = self.lookup(existing)
        if self.nodes[ino].kind == "dir":
            raise OSError(errno.EPERM, existing)
        parent, name = self.parent_of(new)
        if name in self.nodes[parent].entries:
            raise OSError(errno.EEXIST, new)
        self.nodes[ino].nlink += 1
        self._link(parent, name, ino)

    # -- file data --

    def write(self, ino: int, data: bytes, offset: int) -> int:
        buf = self.nodes[ino].data
        if offset > len(buf):
            buf.extend(b"\0" * (offset - len(buf)))
        buf[offset : offset + len(data)] = data
        self.nodes[ino].mtime_ns = time.time_ns()
        self.dirty_data.add(ino)
        return len(data)

    def truncate(self, ino: int, length: int) -> None:
        buf = self.nodes[ino].data
        if length < len(buf):
            del buf[length:]
        else:
            buf.extend(b"\0" * (length - len(buf)))
        self.nodes[ino].mtime_ns = time.time_ns()
        self.dirty_data.add(ino)

    def attributes(self, ino: int) -> dict[str, Any]:
        node = self.nodes[ino]
        kind = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}[node.kind]
        size = {
            "file": len(node.data),
            "dir": 4096,
            "symlink": len(node.target.encode()),
        }[node.kind]
        return {
            "st_mode": kind | (node.mode & 0o7777),
            "st_nlink": max(node.nlink, 1),
            "st_size": size,
            "st_uid": os.getuid(),
            "st_gid": os.getgid(),
            "st_atime": node.mtime_ns,
            "st_mtime": node.mtime_ns,
            "st_ctime": node.mtime_ns,
            "st_blocks": (size + 511) // 512,
            "st_blksize": 4096,
        }


# ---- FUSE glue -----------------------------------------------------------------------------


def serve(backing: Path, mountpoint: Path, seed: int | None) -> None:
    """Mount the filesystem at `mountpoint` and serve it until it is unmounted."""
    import mfusepy

    fs = LazyFS(backing, seed)

    def guarded(method: Any) -> Any:
        def call(self: Any, path: str | None, *args: Any) -> Any:
            with fs.lock:
                if not fs.powered:
                    raise mfusepy.FuseOSError(errno.EIO)
                try:
                    return method(self, path, *args)
                except OSError as exc:
                    raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None

        call.__name__ = method.__name__
        return call

    def inode(path: str | None, fh: int | None) -> int:
        if fh is not None and fh in fs.handles:
            return fs.handles[fh]
        if path is None:
            raise OSError(errno.EBADF, "no path")
        return fs.lookup(path)

    def new_handle(ino: int) -> int:
        fh = fs.next_fh
        fs.next_fh += 1
        fs.handles[fh] = ino
        return fh

    class Operations(mfusepy.Operations):  # type: ignore[misc]
        use_ns = True
        flag_nullpath_ok = True
        flag_nopath = False

        def destroy(self, path: str | None) -> None:
            with fs.lock:
                if fs.powered:
                    fs.sync()

        @guarded
        def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
            if path == "/" + CONTROL:
                return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": 0}
            return fs.attributes(inode(path, fh))

        @guarded
        def readdir(self, path: str | None, fh: int) -> list[str]:
            node = fs.nodes[inode(path, fh)]
            return [".", "..", *node.entries]

        @guarded
        def opendir(self, path: str) -> int:
            ino = fs.lookup(path)
            if fs.nodes[ino].kind != "dir":
                raise OSError(errno.ENOTDIR, path)
            return new_handle(ino)

        @guarded
        def releasedir(self, path: str | None, fh: int) -> int:
            fs.handles.pop(fh, None)
            return 0

        @guarded
        def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
            fs.fsync_inode(inode(path, fh))
            return 0

        @guarded
        def mkdir(self, path: str, mode: int) -> int:
            fs.add_entry(path, Node("dir", mode))
            return 0

        @guarded
        def rmdir(self, path: str) -> int:
            fs.remove(path, want_dir=True)
            return 0

        @guarded
        def unlink(self, path: str) -> int:
            fs.remove(path, want_dir=False)
            return 0

        @guarded
        def rename(self, old: str, new: str) -> int:
            fs.rename(old, new)
            return 0

        @guarded
        def link(self, target: str, source: str) -> int:
            fs.link(source, target)
            return 0

        @guarded
        def symlink(self, target: str, source: str) -> int:
            fs.add_entry(target, Node("symlink", 0o777, target=source))
            return 0

        @guarded
        def readlink(self, path: str) -> str:
            node = fs.nodes[fs.lookup(path)]
            if node.kind != "symlink":
                raise OSError(errno.EINVAL, path)
            return node.target

        @guarded
        def create(self, path: str, mode: int, flags: int = 0) -> int:
            return new_handle(fs.add_entry(path, Node("file", mode & 0o7777)))

        @guarded
        def open(self, path: str, flags: int) -> int:
            if path == "/" + CONTROL:
                return 0
            ino = fs.lookup(path)
            if fs.nodes[ino].kind != "file":
                raise OSError(errno.EISDIR, path)
            if flags & os.O_TRUNC:
                fs.truncate(ino, 0)
            return new_handle(ino)

        @guarded
        def release(self, path: str | None, fh: int) -> int:
            fs.handles.pop(fh, None)
            return 0

        @guarded
        def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
            return bytes(fs.nodes[inode(path, fh)].data[offset : offset + size])

        def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
            if path == "/" + CONTROL:
                # Not guarded: the cut must take the lock itself, between two requests.
                with fs.lock:
                    saved = fs.cut(writeback=data.strip() == b"cut writeback")
                    (backing / "cut.json").write_text(json.dumps(saved))
                return len(data)
            return self._write(path, data, offset, fh)

        @guarded
        def _write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
            return fs.write(inode(path, fh), data, offset)

        @guarded
        def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
            if path == "/" + CONTROL:
                return 0
            fs.truncate(inode(path, fh), length)
            return 0

        @guarded
        def fsync(self, path: str | None, datasync: int, fh: int) -> int:
            fs.fsync_inode(inode(path, fh), path)
            return 0

        @guarded
        def flush(self, path: str | None, fh: int) -> int:
            return 0

        @guarded
        def chmod(self, path: str | None, mode: int) -> int:
            node = fs.nodes[inode(path, None)]
            node.mode = mode & 0o7777
            return 0

        @guarded
        def chown(self, path: str | None, uid: int, gid: int) -> int:
            return 0

        @guarded
        def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
            node = fs.nodes[inode(path, None)]
            node.mtime_ns = times[1] if times else time.time_ns()
            return 0

        @guarded
        def access(self, path: str, amode: int) -> int:
            if path != "/" + CONTROL:
                fs.lookup(path)
            return 0

        @guarded
        def statfs(self, path: str) -> dict[str, int]:
            return {
                "f_bsize": 4096,
                "f_frsize": 4096,
                "f_blocks": 1 << 20,
                "f_bfree": 1 << 19,
                "f_bavail": 1 << 19,
                "f_files": 1 << 20,
                "f_ffree": 1 << 19,
                "f_namemax": 255,
            }

    mfusepy.FUSE(
        Operations(),
        str(mountpoint),
        foreground=True,
        nothreads=True,
        hard_remove=True,
        fsname="lazyfs",
    )


# ---- mounting from a test or a benchmark ---------------------------------------------------


class Mount:
    """One lazyfs mount: start it, cut the power under it, bring it back from the backing."""

    def __init__(self, backing: Path, mountpoint: Path, seed: int | None = None) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.seed = seed
        self.process: subprocess.Popen[bytes] | None = None
        self.generation = 0
        backing.mkdir(parents=True, exist_ok=True)
        mountpoint.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.generation += 1
        seed = None if self.seed is None else self.seed + self.generation
        with open(self.backing.parent / "lazyfs.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, __file__, str(self.backing), str(self.mountpoint), str(seed)],
                stderr=log,
            )
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.mountpoint):
            if self.process.poll() is not None:
                raise RuntimeError(f"lazyfs exited with {self.process.returncode} (see lazyfs.log)")
            if time.monotonic() > deadline:
                raise RuntimeError("lazyfs did not mount within 20 s")
            time.sleep(0.01)

    def cut(self, writeback: bool = False) -> dict[str, int]:
        """Power off: from now on the filesystem persists nothing and fails every call."""
        fd = os.open(self.mountpoint / CONTROL, os.O_WRONLY)
        try:
            os.write(fd, b"cut writeback" if writeback else b"cut")
        finally:
            with contextlib.suppress(OSError):  # the close's flush fails: the power is off
                os.close(fd)
        saved: dict[str, int] = json.loads((self.backing / "cut.json").read_text())
        return saved

    def stop(self) -> None:
        """Unmount (lazily: a killed process may still hold a file) and wait for the server.
        Without a cut first this is a clean shutdown: everything pending is made durable."""
        if self.process is None:
            return
        subprocess.run(
            ["fusermount3", "-u", "-z", str(self.mountpoint)],
            check=False,
            capture_output=True,
        )
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)
        self.process = None

    def restart(self) -> None:
        """After a cut: a fresh server and kernel caches, showing only the durable state."""
        self.stop()
        self.start()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]), None if sys.argv[3] == "None" else int(sys.argv[3]))
