"""The fingerprint cache is a per-host cache kept off network filesystems."""

from pathlib import Path

from align_track_pipeline.core.locations import fingerprint_cache_path, on_network_filesystem

# /proc/self/mountinfo lines: a local root, an NFS share and a CIFS share with a space.
MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:50 / /mnt/nfs rw,relatime shared:30 - nfs4 server:/export rw,vers=4.2
41 22 0:51 / /mnt/team\\040share rw,relatime shared:31 - cifs //srv/share rw
42 40 8:2 / /mnt/nfs/local-scratch rw,relatime shared:32 - xfs /dev/sdb1 rw
"""


def test_network_filesystems_are_told_from_local_ones():
    assert on_network_filesystem(Path("/mnt/nfs/align-track-data/new"), MOUNTINFO)
    assert on_network_filesystem(Path("/mnt/team share/data"), MOUNTINFO)
    assert not on_network_filesystem(Path("/mnt/nfs/local-scratch/data"), MOUNTINFO)
    assert not on_network_filesystem(Path("/home/me/align-track-data"), MOUNTINFO)
    assert not on_network_filesystem(Path("/tmp/x"), "")  # no mount table: local


def test_the_cache_stays_in_a_local_data_dir(tmp_path):
    assert fingerprint_cache_path(tmp_path / "data", {}) == (
        tmp_path / "data" / "state" / "fingerprints.sqlite").resolve()


def test_the_cache_dir_variable_wins_and_names_the_data_dir(tmp_path):
    env = {"ALIGN_TRACK_CACHE_DIR": str(tmp_path / "cache")}
    a = fingerprint_cache_path(tmp_path / "a", env)
    b = fingerprint_cache_path(tmp_path / "b", env)
    assert a.parent == b.parent == tmp_path / "cache" and a != b
    assert a == fingerprint_cache_path(tmp_path / "a", env)  # stable: found again next time


def test_a_data_dir_on_nfs_keeps_its_cache_in_the_host_cache_dir(tmp_path):
    data = Path("/mnt/nfs/align-track-data")
    path = fingerprint_cache_path(data, {"XDG_CACHE_HOME": str(tmp_path)}, MOUNTINFO)
    assert path.parent == tmp_path / "align-track" and path.name.startswith("fingerprints-")
    assert fingerprint_cache_path(data, {}, MOUNTINFO).parent == (
        Path.home() / ".cache" / "align-track")
