"""Where the tree and the data dir are unless a command says otherwise: the environment,
then the bundled sample tree and `./align-track-data`. Plain Python, so the commands that only
read the tables start without loading Dagster."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from align_track_pipeline.core.guard import Refusal, remembered_tree
from align_track_pipeline.core.settings import current, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_TREE = REPO_ROOT / "examples" / "experiment-data"


def default_experiments_dir(data_dir: Path | None = None) -> str:
    """`ALIGN_TRACK_EXPERIMENTS_DIR`, else the tree `data_dir` was built from (so a forgotten
    `--experiments-dir` never points an existing data dir at the sample), else the sample."""
    if current().is_set("ALIGN_TRACK_EXPERIMENTS_DIR"):
        return os.path.expanduser(current().get("ALIGN_TRACK_EXPERIMENTS_DIR"))
    try:
        known = remembered_tree(data_dir) if data_dir else None
    except Refusal:  # an unreadable record: the command's own check reports it
        known = None
    return known or str(BUNDLED_TREE)


def default_data_dir() -> str:
    given = current().get("ALIGN_TRACK_DATA_DIR")  # `~/x` quoted in a file: the home's
    return os.path.expanduser(given) if given else str(Path.cwd() / "align-track-data")


# Filesystems where SQLite's locking is unreliable (and every stat call a round trip).
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs",
    "afs", "9p", "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "fuse.s3fs", "fuse.gcsfuse"})


def fingerprint_cache_path(data_dir: Path, env: dict[str, str] | None = None,
                           mountinfo: str | None = None) -> Path:
    """Where the fingerprint cache of `data_dir` lives: a per-host cache, never shared.

    It maps each run directory's stat data to its content hash, so only changed folders are
    re-hashed; losing it costs one re-hash of the tree, nothing else (versions are content
    hashes, the same on every host). It is SQLite, so it stays off network filesystems:
    `ALIGN_TRACK_CACHE_DIR` if set; else `<data dir>/state/` when the data dir is on a local
    disk (the single-user default); else the host's cache dir (`$XDG_CACHE_HOME/align-track`,
    default `~/.cache/align-track`). Outside the data dir the file is named after a digest of
    the data dir's path, so one cache dir serves several data dirs.
    """
    env = dict(os.environ) if env is None else env
    data_dir = Path(data_dir).resolve()
    named = f"fingerprints-{hashlib.blake2b(str(data_dir).encode(), digest_size=6).hexdigest()}"
    if cache_dir := load_settings(env).get("ALIGN_TRACK_CACHE_DIR"):
        return Path(cache_dir) / f"{named}.sqlite"
    if not on_network_filesystem(data_dir, mountinfo):
        return data_dir / "state" / "fingerprints.sqlite"
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "align-track" / f"{named}.sqlite"


def on_network_filesystem(path: Path, mountinfo: str | None = None) -> bool:
    """Whether `path` (or, if it does not exist yet, its nearest existing parent) is on a
    network filesystem, by the mount table (`/proc/self/mountinfo`; no table: local)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return False
    mounts = {}
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) >= 5 and rest:
            mounts[parts[4].replace("\\040", " ")] = rest.split()[0]
    path = Path(path)
    for candidate in (path, *path.parents):
        if str(candidate) in mounts:
            return mounts[str(candidate)] in NETWORK_FILESYSTEMS
    return False
