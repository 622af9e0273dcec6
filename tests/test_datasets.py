"""Datasets: manifests, the downloader against a loopback HTTP server, processing of small
benchmarks built here in the originals' formats, the paper's metadata, and user imports."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import tarfile
import zipfile
from itertools import count
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jukemir import assets, cache
from jukemir.assets import Asset, ChecksumError, DownloadError, UnsafeArchiveError, retrieve
from jukemir.cache import Layout
from jukemir.cli import main
from jukemir.datasets import emomusic, get_dataset, giantsteps, gtzan, load_meta, magnatagatune
from jukemir.datasets.process import compare_metadata, split_counts
from jukemir.io import read_json, write_json
from tests.loopback import FileServer


# ---------------------------------------------------------------- loopback HTTP server
@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch):
    monkeypatch.delenv("JUKEMIR_MIRROR", raising=False)


# ---------------------------------------------------------------- building blocks
def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tone(seconds: float, sr: int, freq: float = 440.0, amplitude: float = 0.4) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(audio: np.ndarray, sr: int, fmt: str, tmp: Path) -> bytes:
    """WAV (16-bit) or real MP3 bytes of ``audio`` (shape (n,) or (n, channels))."""
    path = tmp / f"enc.{fmt.lower()}"
    sf.write(str(path), audio, sr, format=fmt, **({"subtype": "PCM_16"} if fmt == "WAV" else {}))
    return path.read_bytes()


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tsv(rows: list[dict], delimiter="\t", quoting=csv.QUOTE_ALL) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(rows[0]), delimiter=delimiter, quoting=quoting, lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


class World:
    """Fake assets served by the loopback server, with our manifests pointing at them."""

    def __init__(self, server: FileServer, tmp: Path, monkeypatch):
        self.server, self.tmp = server, tmp
        self.manifest: dict[str, dict] = {}
        self.manifest_dir = tmp / "manifests"
        monkeypatch.setattr(assets, "MANIFEST_DIR", self.manifest_dir)

    def add(self, tag: str, path_rel: str, data: bytes, checksum: str | None = None) -> None:
        url = self.server.add(f"/files/{path_rel}", data)
        self.manifest[tag] = {"path_rel": path_rel, "urls": [url], "checksum": checksum or sha256(data)}
        self.save()

    def add_metadata(self, name: str, meta: dict) -> None:
        data = gzip.compress(json.dumps(meta, indent=2, sort_keys=True).encode(), mtime=0)
        self.add(f"METADATA_{name.upper()}", f"datasets/metadata/{name}.json.gz", data)

    def save(self) -> None:
        write_json(self.manifest_dir / "fake.json", self.manifest)


@pytest.fixture
def world(server, tmp_path, monkeypatch):
    return World(server, tmp_path, monkeypatch)


def read_wav(path: Path) -> tuple[np.ndarray, int, sf._SoundFileInfo]:
    info = sf.info(str(path))
    data, sr = sf.read(str(path), dtype="int16")
    return data, sr, info


# ---------------------------------------------------------------- the package's manifests
def test_package_manifests_cover_every_asset_with_mirrors_and_checksums():
    reg = assets.registry()
    tags = list(reg)
    assert sum(t.startswith("PRECOMPUTED-") for t in tags) == 24
    assert sum(t.startswith("GIANTSTEPS_") for t in tags) == 2092
    assert sum(t.startswith("METADATA_") for t in tags) == 4
    assert {
        "GTZAN",
        "GTZAN_TRAIN",
        "GTZAN_VALID",
        "GTZAN_TEST",
        "EMOMUSIC_CLIPS",
        "EMOMUSIC_ANNOTATIONS",
    } <= set(tags)
    assert all(a.urls and a.checksum for a in reg.values())
    assert len({a.path_rel for a in reg.values()}) == len(reg)

    gtzan_urls = assets.get_asset("gtzan").urls
    assert (
        "opihi.cs.uvic.ca" not in gtzan_urls[0]
        and gtzan_urls[-1] == "http://opihi.cs.uvic.ca/sound/genres.tar.gz"
    )
    assert any("web.archive.org" in u for u in gtzan_urls)
    for asset in assets.assets_for("MAGNATAGATUNE_"):
        assert asset.urls[0].startswith("https://mirg.city.ac.uk/datasets/magnatagatune/")
        assert asset.urls[-1].startswith("http://mi.soi.city.ac.uk/")
    for name in ["gtzan_ff", "magnatagatune", "giantsteps_clips", "emomusic"]:
        asset = assets.get_asset(f"METADATA_{name}")
        assert "241555645682d18fb909775c54014edfc3a03163" in asset.urls[0]
        assert asset.mirror_path == f"reference/jukemir/metadata/{name}.json.gz"
    with pytest.raises(ValueError, match="unknown asset 'NOPE'"):
        assets.get_asset("NOPE")


# ---------------------------------------------------------------- downloader
def test_interrupted_download_resumes_with_range(server, tmp_path):
    data = np.random.default_rng(0).bytes(300_000)
    url = server.add("/big.bin", data)
    server.cut("/big.bin", 120_000)
    asset = Asset("BIG", "datasets/x/big.bin", [url], sha256(data))
    path = retrieve(asset, tmp_path, backoff=0.01, progress=False)
    assert path.read_bytes() == data
    assert server.requests == [("/big.bin", None), ("/big.bin", "bytes=120000-")]
    assert not path.with_name("big.bin.part").exists()

    # A .part left by a killed run is continued, not restarted.
    (tmp_path / "datasets/x/big.bin").unlink()
    (tmp_path / "datasets/x/big.bin.part").write_bytes(data[:50_000])
    retrieve(asset, tmp_path, backoff=0.01, progress=False)
    assert server.requests[-1] == ("/big.bin", "bytes=50000-")
    assert path.read_bytes() == data


def test_wrong_checksum_is_rejected_and_nothing_is_kept(server, tmp_path):
    url = server.add("/a.bin", b"the real bytes")
    asset = Asset("A", "datasets/a.bin", [url], sha256(b"other bytes"))
    with pytest.raises(ChecksumError, match=r"asset A: .*/a.bin: checksum mismatch"):
        retrieve(asset, tmp_path, backoff=0.01, progress=False)
    assert not (tmp_path / "datasets/a.bin").exists() and not (tmp_path / "datasets/a.bin.part").exists()


def test_404_is_reported_with_asset_url_and_reason(server, tmp_path):
    url = server.base + "/missing.bin"
    asset = Asset("GONE", "datasets/gone.bin", [url], sha256(b"x"))
    with pytest.raises(DownloadError) as err:
        retrieve(asset, tmp_path, backoff=0.01, progress=False)
    assert "asset GONE" in str(err.value) and url in str(err.value) and "HTTP 404" in str(err.value)
    assert len(server.requests) == 1  # a 404 is not retried


def test_mirror_is_tried_first_from_argument_or_environment(server, tmp_path, monkeypatch):
    data = b"mirrored"
    server.add("/mirror/datasets/m.bin", data)
    asset = Asset("M", "datasets/m.bin", [server.base + "/dead/m.bin"], sha256(data))
    assert (
        retrieve(asset, tmp_path / "a", mirror=server.base + "/mirror", progress=False).read_bytes() == data
    )
    assert server.requests == [("/mirror/datasets/m.bin", None)]
    monkeypatch.setenv("JUKEMIR_MIRROR", server.base + "/mirror/")
    assert retrieve(asset, tmp_path / "b", progress=False).read_bytes() == data


def test_unpack_refuses_members_outside_the_destination(tmp_path):
    for name, data in {
        "dotdot.tar.gz": tar_gz({"ok.txt": b"1", "../evil.txt": b"2"}),
        "abs.tar.gz": tar_gz({"/tmp/evil.txt": b"2"}),
        "dotdot.zip": zip_bytes({"a/../../evil.txt": b"2"}),
    }.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UnsafeArchiveError, match=re.escape(name)):
            assets.unpack(tmp_path / name, tmp_path / "out")
    # links out of the destination and special files (tarfile's data filter), links within it (files only)
    for name, kind, linkname, reason in (
        ("abs_link", tarfile.SYMTYPE, "/etc/passwd", "link to an absolute path"),
        ("rel_link", tarfile.SYMTYPE, "../../etc/passwd", "outside the destination"),
        ("fifo", tarfile.FIFOTYPE, "", "special file"),
        ("in_link", tarfile.SYMTYPE, "ok.txt", "is a link"),
    ):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            info = tarfile.TarInfo("x")
            info.type, info.linkname = kind, linkname
            tf.addfile(info)
        (tmp_path / f"{name}.tar.gz").write_bytes(buf.getvalue())
        with pytest.raises(UnsafeArchiveError, match=f"{name}.tar.gz: .*{reason}"):
            assets.unpack(tmp_path / f"{name}.tar.gz", tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


# ---------------------------------------------------------------- GTZAN
def build_gtzan(world: World) -> dict:
    files, audio, expected = {}, {}, {}
    splits = {"train": [], "valid": [], "test": []}
    for g, genre in enumerate(["blues", "jazz", "rock"]):
        for i in range(3):
            did = f"{genre}.{i:05d}"
            pcm = (tone(0.5 + 0.1 * i, 22050, 200 + 50 * g) * 32768).astype(np.int16)
            audio[did] = pcm
            files[f"genres/{genre}/{did}.wav"] = encode(pcm, 22050, "WAV", world.tmp)
            split = ["train", "valid", "test"][i]
            if did == "rock.00002":
                continue  # in no fault-filtered list: dropped
            splits[split].append(f"{genre}/{did}.wav")
            uid = sha256(did.encode())
            expected[uid] = {"split": split, "y": genre, "extra": {"id": did, "uid": uid}}
    files["genres/input.mf"] = b"not audio"
    world.add("GTZAN", "datasets/gtzan/genres.tar.gz", tar_gz(files))
    for split, lines in splits.items():
        world.add(
            f"GTZAN_{split.upper()}",
            f"datasets/gtzan/{split}_filtered.txt",
            "\n".join(lines).encode() + b"\n",
        )
    world.add_metadata("gtzan_ff", expected)
    return {"audio": audio, "expected": expected}


def test_gtzan_verify_process_resume_and_derived(world):
    fake = build_gtzan(world)
    assert main(["process", "gtzan", "--verify-metadata", "--jobs", "2"]) == 0
    assert main(["process", "gtzan_ff", "--jobs", "2", "--no-progress"]) == 0

    out = Layout().processed("gtzan_ff")
    meta = load_meta("gtzan_ff")
    assert meta == fake["expected"] and len(meta) == 8
    assert split_counts(meta) == {"train": 3, "valid": 3, "test": 2, None: 0}
    for uid, record in meta.items():
        pcm, sr, info = read_wav(out / "wav" / f"{uid}.wav")
        assert (sr, info.channels, info.subtype) == (22050, 1, "PCM_16")
        np.testing.assert_array_equal(
            pcm, fake["audio"][record["extra"]["id"]]
        )  # a WAV source is copied bit for bit
    assert len(list((out / "wav").iterdir())) == 8

    # Resume: existing WAVs are kept, a missing one is rewritten.
    victim = next(iter(meta))
    (out / "wav" / f"{victim}.wav").unlink()
    from jukemir.datasets.process import process_dataset

    report = process_dataset("gtzan_ff", jobs=1, progress=False)
    assert (report.written, report.skipped, report.ok) == (1, 7, True)

    report = process_dataset("gtzan_ff", metadata="derived", progress=False)
    assert report.ok and load_meta("gtzan_ff") == fake["expected"]


# ---------------------------------------------------------------- MagnaTagATune
MTT_TAGS = [f"tag{i:02d}" for i in range(52)]


def build_mtt(world: World) -> dict:
    url_a, url_b, url_c = (f"http://www.magnatune.com/artists/albums/{x}/" for x in "abc")
    clips = [  # clip_id, url, track, start, end, mp3_path, tags (None: no annotation row)
        ("2", url_a, "01", 30, 59, "0/a-01-30-59.mp3", MTT_TAGS[:51]),
        ("6", url_a, "01", 117, 146, "c/a-01-117-146.mp3", MTT_TAGS[25:50] + ["tag51"]),
        ("3", url_a, "01", 88, 117, "d/a-01-88-117.mp3", MTT_TAGS[:25]),
        ("215", url_b, "01", 30, 59, "", None),
        ("35644", url_c, "02", 0, 29, "e/c-02-0-29.mp3", []),  # a corrupt MP3 in the original: no audio
    ]
    rows, annotations, zipped, frames, expected = [], [], {}, {}, {}
    for clip_id, url, track, start, end, mp3, tags in clips:
        row = {
            "clip_id": clip_id,
            "track_number": track,
            "title": f"t{clip_id}",
            "artist": "x",
            "album": "y",
            "url": url,
            "segmentStart": str(start),
            "segmentEnd": str(end),
            "original_url": "",
            "mp3_path": mp3,
        }
        rows.append(row)
        if tags is not None:
            annotations.append(
                {"clip_id": clip_id, **{t: "1" if t in tags else "0" for t in MTT_TAGS}, "mp3_path": mp3}
            )
        if mp3:
            samples = tone(1.0 + 0.25 * len(zipped), 16000, 300)
            zipped[mp3] = encode(samples, 16000, "MP3", world.tmp)
            frames[clip_id] = len(samples)
    whole = zip_bytes(zipped)
    third = len(whole) // 3
    for i, part in enumerate([whole[:third], whole[third : 2 * third], whole[2 * third :]], start=1):
        world.add(f"MAGNATAGATUNE_MP3_00{i}", f"datasets/magnatagatune/mp3.zip.00{i}", part)
    world.add("MAGNATAGATUNE_CLIP_METADATA", "datasets/magnatagatune/clip_info_final.csv", tsv(rows))
    world.add("MAGNATAGATUNE_ANNOTATIONS", "datasets/magnatagatune/annotations_final.csv", tsv(annotations))

    split = {"2": "train", "6": "valid", "3": "test", "215": None, "35644": None}
    clip_idx = {"2": 0, "3": 1, "6": 2, "215": 0, "35644": 0}
    duration = {"2": 146.0, "3": 146.0, "6": 146.0, "215": 59.0, "35644": 29.0}
    for (clip_id, url, track, start, _, _, tags), row in zip(clips, rows):
        expected[clip_id.zfill(5)] = {
            "split": split[clip_id],
            "clip": {
                "audio_uid": [url, track],
                "audio_duration": duration[clip_id],
                "clip_idx": clip_idx[clip_id],
                "clip_offset": float(start),
            },
            "y": None if tags is None else [t for t in tags if t not in ("tag50", "tag51")],
            "y_all": tags,
            "extra": row,
        }
    world.add_metadata("magnatagatune", expected)
    return {"expected": expected, "frames": frames}


def test_magnatagatune_split_zip_verify_and_process(world):
    fake = build_mtt(world)
    assert main(["process", "magnatagatune", "--verify-metadata", "--jobs", "1"]) == 0
    assert main(["process", "mtt", "--jobs", "1", "--no-progress"]) == 0

    meta = load_meta("magnatagatune")
    assert split_counts(meta) == {"train": 1, "valid": 1, "test": 1, None: 2}
    assert meta["00002"]["y"] == MTT_TAGS[:50] and meta["00002"]["y_all"] == MTT_TAGS[:51]
    assert meta["00215"]["y"] is None and meta["35644"]["y"] == []
    wavs = sorted(p.stem for p in (Layout().processed("magnatagatune") / "wav").iterdir())
    assert wavs == ["00002", "00003", "00006"]  # split-null clips stay in meta.json, without audio
    for uid in wavs:
        pcm, sr, info = read_wav(Layout().processed("magnatagatune") / "wav" / f"{uid}.wav")
        assert (sr, info.channels, len(pcm)) == (16000, 1, fake["frames"][str(int(uid))])
        assert meta[uid]["clip"]["clip_duration"] == len(pcm) / 16000
    assert "clip_duration" not in meta["00215"]["clip"]
    assert not (
        cache.datasets_dir() / "magnatagatune" / "unpacked" / "mp3.zip"
    ).exists()  # the joined zip is removed


# ---------------------------------------------------------------- Emomusic
def artist_in(split: str, hash_split, names=()) -> str:
    """The first ``Band <letters>`` (not in ``names``) that ``hash_split`` puts in ``split``."""
    for i in count():
        name = "Band " + "".join(chr(97 + int(d)) for d in str(i))
        if name not in names and hash_split(name) == split:
            return name


def build_emomusic(world: World) -> dict:
    def emo_split(name):
        kept = " ".join(
            "".join(c for c in name.lower() if c.isascii() and (c.isalpha() or c.isspace())).split()
        )
        return "valid" if int(hashlib.sha1(kept.encode()).hexdigest(), 16) % 10 >= 8 else "train"

    songs = [  # id, artist split, MediaEval set, start, end, arousal, valence
        (2, "train", "development", "0.48", "1.33", 3.1, 3.0),
        (3, "valid", "development", "0.45", "1.3", 6.0, 5.5),
        (5, "train", "development", "1.00", "1.45", 5.2, 7.1),
        (7, "train", "evaluation", "0.10", "0.55", 4.4, 2.2),
        (11, "valid", "development", "2.15", "3.00", 7.7, 6.6),
    ]
    artists: list[str] = []
    info, static, cont = [], [], []
    clips, frames = {}, {}
    for song, asplit, mediaeval, start, end, arousal, valence in songs:
        artists.append(artist_in(asplit, emo_split, artists))
        info.append(
            {
                "song_id": str(song),
                "file_name": f"{song}.mp3",
                "Artist": artists[-1] + " ",
                "Song title": f"Song {song}",
                "start of the segment (min.sec)": start,
                "end of the segment (min.sec)": end,
                "Genre": "Pop",
                "Mediaeval 2013 set": mediaeval,
            }
        )
        static.append(
            {
                "song_id": str(song),
                "mean_arousal": str(arousal),
                "std_arousal": "1",
                "mean_valence": str(valence),
                "std_valence": "1",
            }
        )
        cont.append({"song_id": str(song), "sample_15000ms": "0.1", "sample_15500ms": "-0.2"})
        stereo = np.stack([tone(1.2, 44100, 500), 0.5 * tone(1.2, 44100, 500)], axis=1)
        clips[f"clips_45seconds/{song}.mp3"] = encode(stereo, 44100, "MP3", world.tmp)
        frames[str(song).zfill(4)] = len(stereo)
    tables = {
        "songs_info": info,
        "static_annotations": static,
        "valence_cont_average": cont,
        "valence_cont_std": cont,
        "arousal_cont_average": cont,
        "arousal_cont_std": cont,
    }
    world.add("EMOMUSIC_CLIPS", "datasets/emomusic/clips_45sec.tar.gz", tar_gz(clips))
    world.add(
        "EMOMUSIC_ANNOTATIONS",
        "datasets/emomusic/annotations.tar.gz",
        tar_gz({f"{stem}.csv": tsv(rows, ",", csv.QUOTE_MINIMAL) for stem, rows in tables.items()}),
    )

    dev = np.array([[a, v] for _, _, m, _, _, a, v in songs if m == "development"])
    mean, std = dev.mean(axis=0), dev.std(axis=0)
    starts = {2: 48.0, 3: 45.0, 5: 60.0, 7: 10.0, 11: 135.0}
    expected = {}
    for (song, asplit, mediaeval, *_, arousal, valence), artist in zip(songs, artists):
        uid = str(song).zfill(4)
        expected[uid] = {
            "split": "test" if mediaeval == "evaluation" else asplit,
            "y": list((np.array([arousal, valence]) - mean) / std),
            "clip": {
                "audio_uid": [artist, f"Song {song}"],
                "audio_duration": starts[song] + 45.0,
                "clip_idx": 0,
                "clip_offset": starts[song],
                "clip_duration": 45.0,
            },
            "extra": {
                stem: {k: v.strip() for k, v in rows[[r["song_id"] for r in rows].index(str(song))].items()}
                for stem, rows in tables.items()
            },
        }
    world.add_metadata("emomusic", expected)
    return {"expected": expected, "frames": frames}


def test_emomusic_standardised_labels_artist_split_and_mono_wavs(world):
    fake = build_emomusic(world)
    assert main(["process", "emomusic", "--verify-metadata"]) == 0
    assert main(["process", "emomusic", "--no-progress", "--jobs", "2"]) == 0
    meta = load_meta("emomusic")
    assert split_counts(meta) == {"train": 2, "valid": 2, "test": 1, None: 0}
    assert len({tuple(r["y"]) for r in meta.values()}) == 5
    for uid, record in meta.items():
        pcm, sr, info = read_wav(Layout().processed("emomusic") / "wav" / f"{uid}.wav")
        assert (sr, info.channels, len(pcm)) == (44100, 1, fake["frames"][uid])
        peak = np.abs(pcm).max() / 32768
        assert 0.25 < peak < 0.35  # the mean of a 0.4 and a 0.2 channel
        assert record["clip"]["clip_duration"] == pytest.approx(1.2)


# ---------------------------------------------------------------- GiantSteps
def _gs_split(name: str) -> str:
    return "valid" if int(hashlib.sha1(name.lower().encode()).hexdigest(), 16) % 116 >= 100 else "train"


def build_giantsteps(world: World) -> dict:
    v = artist_in("valid", _gs_split)
    t1 = artist_in("train", _gs_split)
    t2 = artist_in("train", _gs_split, [t1])
    t3 = artist_in("train", _gs_split, [t1, t2])
    t4 = artist_in("train", _gs_split, [t1, t2, t3])
    t5 = artist_in("train", _gs_split, [t1, t2, t3, t4])
    train_tracks = [  # id, artists, manual key, C, seconds, expected split (rows in this order)
        (
            103,
            f"{t5}, {t1}",
            "F minor",
            "2",
            35.0,
            "valid",
        ),  # t1 turns valid after this row: needs the 2nd hop
        (102, f"{t1}, {v}", "A major", "2", 31.0, "valid"),  # a collaborator of a valid artist
        (101, v, "D# minor", "2", 61.0, "valid"),
        (104, t2, "G# major", "2", 65.0, "train"),
        (105, t3, "C minor", "1", 1.0, None),  # low confidence: dropped
        (106, t4, "C minor / F# minor", "2", 1.0, None),  # several keys: dropped
    ]
    test_tracks = [(201, "Eb minor", 62.0), (202, "D major", 31.0)]

    def mp3(seconds):
        # 30 s segments at different pitches, so a clip cut at the wrong offset shows.
        segments = [
            tone(min(30.0, seconds - k * 30), 44100, 220 * (k + 1)) for k in range(int(np.ceil(seconds / 30)))
        ]
        return encode(np.concatenate(segments), 44100, "MP3", world.tmp)

    root = "giantsteps-mtg-key-dataset-fd7b8c584f7bd6d720d170c325a6d42c9bf75a6b"
    files, beatport, annotations, extras = {}, [], [], {}
    for did, artist, key, conf, seconds, _ in train_tracks:
        bp = {
            "ID": str(did),
            "ARTIST": artist,
            "SONG TITLE": f"s{did}",
            "MIX": "Original Mix",
            "LABEL": "L",
            "BP GENRE": "Techno",
            "BP BPM": "128",
            "BP KEY": key,
        }
        ann = {"ID": str(did), "MANUAL KEY": key, "C": conf}
        beatport.append(bp)
        annotations.append(ann)
        texts = {
            "genre": "techno\n",
            "key": f"{key.lower()}\t{conf}\t\n",
            "giantsteps.genre": "#@format: tag\ntag\t0\ttechno\n",
            "giantsteps.key": f"key\t0\t{key.lower()}\n",
        }
        for name, text in texts.items():
            folder, ext = name.rpartition(".")[0] or name, name.rpartition(".")[2]
            files[f"{root}/annotations/{folder}/{did}.LOFI.{ext}"] = text.encode()
        files[f"{root}/md5/{did}.LOFI.md5"] = b"0" * 32
        extras[did] = {"id": did, "beatport_metadata": bp, "annotations": ann, **texts}
        world.add(f"GIANTSTEPS_MTG_KEY_{did}", f"datasets/giantsteps/audio/{did}.LOFI.mp3", mp3(seconds))
    files[f"{root}/annotations/beatport_metadata.txt"] = tsv(beatport, quoting=csv.QUOTE_MINIMAL)
    files[f"{root}/annotations/annotations.txt"] = tsv(annotations, quoting=csv.QUOTE_MINIMAL)
    files[f"{root}/README.md"] = b"# giantsteps-mtg-key-dataset"
    world.add(
        "GIANTSTEPS_MTG_KEY_ANNOTATIONS", "datasets/giantsteps/mtg-key-annotations.zip", zip_bytes(files)
    )

    root = "giantsteps-key-dataset-c8cb8aad2cb53f165be51ea099d0dc75c64a844f"
    files = {}
    for did, key, seconds in test_tracks:
        jams = {"annotations": [{"namespace": "key_mode", "data": [{"value": key.replace(" ", ":")}]}]}
        texts = {
            "genre": "breaks",
            "key": key,
            "giantsteps.genre": "tag 0 breaks",
            "giantsteps.key": f"key 0 {key}\n",
        }
        for name, text in texts.items():
            folder, ext = name.rpartition(".")[0] or name, name.rpartition(".")[2]
            files[f"{root}/annotations/{folder}/{did}.LOFI.{ext}"] = text.encode()
        files[f"{root}/annotations/jams/{did}.LOFI.jams"] = json.dumps(jams).encode()
        files[f"{root}/md5/{str(did).zfill(7)}.LOFI.md5"] = b"0" * 32
        extras[did] = {"id": did, **texts, "jams": jams}
        world.add(f"GIANTSTEPS_KEY_{did}", f"datasets/giantsteps/audio/{did}.LOFI.mp3", mp3(seconds))
    world.add("GIANTSTEPS_KEY_ANNOTATIONS", "datasets/giantsteps/key-annotations.zip", zip_bytes(files))

    labels = {
        101: "Eb minor",
        102: "A major",
        103: "F minor",
        104: "Ab major",
        201: "Eb minor",
        202: "D major",
    }
    songs = [(d, s, sec) for d, _, _, _, sec, s in train_tracks if s] + [
        (d, "test", sec) for d, _, sec in test_tracks
    ]
    expected = {}
    for did, split, seconds in songs:
        for idx in range(int(seconds // 30)):
            expected[f"{str(did).zfill(7)}-{idx}"] = {
                "split": split,
                "y": labels[did],
                "extra": extras[did],
                "clip": {
                    "audio_uid": str(did).zfill(7),
                    "audio_duration": seconds,
                    "clip_idx": idx,
                    "clip_offset": 30.0 * idx,
                    "clip_duration": 30.0,
                },
            }
    world.add_metadata("giantsteps_clips", expected)
    return {"expected": expected}


def test_giantsteps_two_hop_artist_split_and_30s_clips(world):
    fake = build_giantsteps(world)
    assert main(["process", "giantsteps", "--verify-metadata", "--jobs", "4"]) == 0
    assert main(["process", "giantsteps_clips", "--no-progress", "--jobs", "1"]) == 0
    meta = load_meta("giantsteps_clips")
    assert (
        sorted(meta)
        == sorted(fake["expected"])
        == [
            "0000101-0",
            "0000101-1",
            "0000102-0",
            "0000103-0",
            "0000104-0",
            "0000104-1",
            "0000201-0",
            "0000201-1",
            "0000202-0",
        ]
    )
    assert split_counts(meta) == {"train": 2, "valid": 4, "test": 3, None: 0}
    for uid, record in meta.items():
        pcm, sr, info = read_wav(Layout().processed("giantsteps_clips") / "wav" / f"{uid}.wav")
        assert (sr, info.channels, len(pcm)) == (44100, 1, 30 * 44100)
        assert record["clip"]["clip_duration"] == 30.0
        spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
        peak_hz = np.argmax(spectrum) * 44100 / len(pcm)
        assert peak_hz == pytest.approx(220 * (record["clip"]["clip_idx"] + 1), abs=2)  # the right 30 s


def test_process_reports_undecodable_audio_and_writes_no_meta(world):
    build_gtzan(world)
    work = cache.datasets_dir() / "gtzan" / "unpacked"
    assert main(["process", "gtzan", "--jobs", "1", "--no-progress"]) == 0
    meta_json = Layout().processed("gtzan_ff") / "meta.json"
    meta_json.unlink()
    victim = next((work / "genres" / "jazz").glob("*.00001.wav"))
    victim.write_bytes(b"garbage")
    for wav in (Layout().processed("gtzan_ff") / "wav").iterdir():
        wav.unlink()
    from jukemir.datasets.process import process_dataset

    report = process_dataset("gtzan_ff", progress=False)
    assert len(report.failed) == 1 and str(victim) in report.failed[0][1] and "\n" not in report.failed[0][1]
    assert report.written == 7 and not meta_json.exists()


# ---------------------------------------------------------------- precomputed features
def test_precomputed_download_unpack_and_reject_unsafe(world, capsys):
    features = {f"{'ab'[i]}{i}.npy": np.full(72, i, np.float32) for i in range(2)}
    members = {}
    for name, array in features.items():
        buf = io.BytesIO()
        np.save(buf, array)
        members[f"gtzan_ff/chroma/{name}"] = buf.getvalue()
    world.add("PRECOMPUTED-GTZAN_FF-CHROMA", "representations/gtzan_ff-chroma.tar.gz", tar_gz(members))
    world.add(
        "PRECOMPUTED-EMOMUSIC-CHROMA", "representations/emomusic-chroma.tar.gz", tar_gz({"../../x.npy": b"1"})
    )
    assert main(["download", "precomputed", "gtzan", "chroma"]) == 0
    assert "PRECOMPUTED-GTZAN_FF-CHROMA: 2 .npy files" in capsys.readouterr().out
    folder = Layout().representations("gtzan_ff", "chroma")
    for name, array in features.items():
        np.testing.assert_array_equal(np.load(folder / name), array)
    assert main(["download", "precomputed", "gtzan_ff"]) == 0  # installed already: a no-op
    assert main(["download", "precomputed", "emomusic"]) == 2
    assert "'../../x.npy'" in capsys.readouterr().err
    assert not (cache.cache_dir() / "x.npy").exists()
    assert main(["download", "precomputed", "nonsense"]) == 2


# ---------------------------------------------------------------- the paper's metadata
@pytest.fixture
def real_metadata_mirror(tmp_path, paper_metadata):
    """A mirror folder laid out like the cache, linking to the real files."""
    folder = tmp_path / "mirror" / "datasets" / "metadata"
    folder.mkdir(parents=True)
    for path in paper_metadata.glob("*.json.gz"):
        (folder / path.name).symlink_to(path)
    return tmp_path / "mirror"


def test_real_metadata_reproduces_reference_counts(real_metadata_mirror, capsys):
    # Fetched through the package's own manifests (sha256 checked) and installed as processed/<ds>/meta.json.
    assert main(["download", "metadata", "--mirror", str(real_metadata_mirror)]) == 0
    assert capsys.readouterr().out.count("the paper's metadata") == 4
    expected = {
        "gtzan_ff": {"train": 443, "valid": 197, "test": 290, None: 0},
        "magnatagatune": {"train": 18706, "valid": 1825, "test": 5329, None: 5522},
        "giantsteps_clips": {"train": 3687, "valid": 942, "test": 2406, None: 0},
        "emomusic": {"train": 504, "valid": 115, "test": 125, None: 0},
    }
    for name, counts in expected.items():
        meta = load_meta(name)
        assert split_counts(meta) == counts, name
        spec = get_dataset(name)
        in_split = [r for r in meta.values() if r["split"]]
        if spec.task == "multiclass":
            assert {r["y"] for r in in_split} == set(spec.labels)
        elif spec.task == "multilabel":
            assert {t for r in in_split for t in r["y"]} == set(spec.labels)
            assert sum(not r["y"] for r in in_split) == 4752
        else:
            assert all(len(r["y"]) == 2 for r in in_split)


def test_metadata_derived_from_annotations_rebuilt_from_the_real_files(paper_metadata):
    """Rebuild the raw annotation tables from the extras in the real metadata.

    Derivation must give it back.
    """
    real = read_json(paper_metadata / "gtzan_ff.json.gz")
    lists = {"train": [], "valid": [], "test": []}
    for record in real.values():
        lists[record["split"]].append(f"{record['y']}/{record['extra']['id']}.wav")
    listed = {r["extra"]["id"] for r in real.values()}
    wavs = [
        f"genres/{g}/{g}.{i:05d}.wav"
        for g in [
            "blues",
            "classical",
            "country",
            "disco",
            "hiphop",
            "jazz",
            "metal",
            "pop",
            "reggae",
            "rock",
        ]
        for i in range(100)
    ]
    derived = gtzan.derive(wavs, lists)
    assert compare_metadata(derived, real) == [] and len(wavs) - len(listed) == 70

    real = read_json(paper_metadata / "emomusic.json.gz")
    assert (
        compare_metadata(
            emomusic.derive({s: [r["extra"][s] for r in real.values()] for s in emomusic.TABLES}), real
        )
        == []
    )

    real = read_json(paper_metadata / "magnatagatune.json.gz")
    clip_rows = [r["extra"] for r in real.values()]
    order: list[str] = []  # a tag column order consistent with every y_all (y_all follows the CSV columns)
    for record in sorted(real.values(), key=lambda r: -len(r["y_all"] or [])):
        for tag in record["y_all"] or []:
            if tag not in order:
                order.append(tag)
    import graphlib

    graph = graphlib.TopologicalSorter({t: set() for t in order})
    for record in real.values():
        for a, b in zip(record["y_all"] or [], (record["y_all"] or [])[1:]):
            graph.add(b, a)
    columns = list(graph.static_order())
    assert len(columns) == 188
    annotation_rows = [
        {
            "clip_id": r["extra"]["clip_id"],
            **{t: "1" if t in r["y_all"] else "0" for t in columns},
            "mp3_path": r["extra"]["mp3_path"],
        }
        for r in real.values()
        if r["y_all"] is not None
    ]
    assert compare_metadata(magnatagatune.derive(clip_rows, annotation_rows), real) == []

    # The real metadata keeps only the tracks that passed the filter, so the artist links that ran
    # through dropped tracks are missing: at most a few songs come out train instead of valid.
    real = read_json(paper_metadata / "giantsteps_clips.json.gz")
    tracks = {
        r["extra"]["id"]: ("test" if r["split"] == "test" else "train", r["extra"]["id"], r["extra"])
        for r in real.values()
    }
    durations = {r["extra"]["id"]: r["clip"]["audio_duration"] for r in real.values()}
    beatport = [extra["beatport_metadata"] for pool, _, extra in tracks.values() if pool == "train"]
    derived = giantsteps.derive(beatport, list(tracks.values()), durations.__getitem__)
    assert sorted(derived) == sorted(real)
    moved = [uid for uid in real if derived[uid]["split"] != real[uid]["split"]]
    assert (
        all((derived[u]["split"], real[u]["split"]) == ("train", "valid") for u in moved) and len(moved) <= 20
    )
    assert (
        compare_metadata(
            {u: r for u, r in derived.items() if u not in moved},
            {u: r for u, r in real.items() if u not in moved},
        )
        == []
    )


# ---------------------------------------------------------------- user datasets
def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return path


@pytest.fixture
def user_audio(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    for i in range(4):
        sf.write(str(folder / f"song{i}.wav"), tone(0.5, 16000, 300 + 40 * i), 16000)
    return folder


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [["file", "label"], ["song0.wav", "a"], ["nope.wav", "b"]],
            r"labels.csv line 3: audio file 'nope.wav' not found",
        ),
        ([["file", "label", "colour"], ["song0.wav", "a", "red"]], r"labels.csv: unknown column 'colour'"),
        (
            [["file", "id", "label"], ["song0.wav", "x", "a"], ["song1.wav", "x", "b"]],
            r"line 3: duplicate id 'x' \(first on line 2\)",
        ),
        (
            [["file", "label"], ["song0.wav", "a"], ["song1.wav", ""]],
            r"labels.csv line 3: empty label in column 'label'",
        ),
        ([["file"], ["song0.wav"]], r"labels.csv: no 'label' column"),
        ([["file", "label"], ["song0.wav", "a", "extra"]], r"line 2: more fields than the header"),
    ],
)
def test_import_rejects_bad_csv_with_one_line_errors(tmp_path, user_audio, rows, message, capsys):
    labels = _write_csv(tmp_path / "labels.csv", rows)
    code = main(
        ["import", "mine", "--audio", str(user_audio), "--labels", str(labels), "--task", "multiclass"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and re.search(message, err) and "\n" not in err, err


def test_import_regression_rejects_non_numbers(tmp_path, user_audio):
    from jukemir.datasets.custom import LabelsError, read_labels

    labels = _write_csv(tmp_path / "labels.csv", [["file", "a", "v"], ["song0.wav", "1.5", "x"]])
    with pytest.raises(LabelsError, match=r"line 2: 'x' in column 'v' is not a finite number"):
        read_labels(labels, user_audio, "regression", label_columns=["a", "v"])


def test_import_writes_the_processed_layout_and_registers_the_dataset(tmp_path, user_audio):
    rows = [["file", "label", "fold"]] + [
        [f"song{i}.wav", "ab"[i % 2], ["train", "train", "valid", "test"][i]] for i in range(4)
    ]
    labels = _write_csv(tmp_path / "labels.csv", rows)
    args = ["import", "mine", "--audio", str(user_audio), "--labels", str(labels), "--task", "multiclass"]
    assert main(args + ["--split-column", "fold", "--no-progress", "--jobs", "1"]) == 0
    spec = get_dataset("mine")
    assert (spec.task, spec.labels, spec.primary) == ("multiclass", ["a", "b"], "accuracy")
    meta = load_meta("mine")
    assert {u: r["split"] for u, r in meta.items()} == {
        "song0": "train",
        "song1": "train",
        "song2": "valid",
        "song3": "test",
    }
    pcm, sr, info = read_wav(Layout().processed("mine") / "wav" / "song2.wav")
    assert (sr, info.channels, len(pcm)) == (16000, 1, 8000)

    # A random 50/25/25 split is reproducible from its seed.
    random = ["--split", "50/25/25", "--seed", "3", "--no-progress", "--jobs", "1"]
    labels = _write_csv(tmp_path / "plain.csv", [r[:2] for r in rows])
    plain = ["import", "mine2", "--audio", str(user_audio), "--labels", str(labels), "--task", "multiclass"]
    assert main(plain + random) == 0
    first = {u: r["split"] for u, r in load_meta("mine2").items()}
    assert sorted(first.values()) == ["test", "train", "train", "valid"]
    assert main(plain + random + ["--overwrite"]) == 0
    assert {u: r["split"] for u, r in load_meta("mine2").items()} == first
    with pytest.raises(ValueError, match="built-in"):
        from jukemir.datasets.custom import import_dataset

        import_dataset("gtzan_ff", user_audio, labels, "multiclass")


def test_imported_dataset_runs_through_extract_probe_evaluate(tmp_path):
    from jukemir.probe.evaluate import evaluate_pair
    from jukemir.probe.grid import grid_cfgs
    from jukemir.probe.train import train_grid

    rng = np.random.default_rng(0)
    audio = tmp_path / "clips"
    audio.mkdir()
    rows = [["file", "label"]]
    for i in range(24):
        label = ["c", "f_sharp"][i % 2]
        freq = {"c": 261.63, "f_sharp": 369.99}[label] * rng.uniform(0.99, 1.01)
        noisy = tone(1.0, 22050, freq) + 0.02 * rng.standard_normal(22050).astype(np.float32)
        sf.write(str(audio / f"clip{i:02d}.flac"), noisy, 22050)
        rows.append([f"clip{i:02d}.flac", label])
    labels = _write_csv(tmp_path / "labels.csv", rows)
    args = ["import", "tones", "--audio", str(audio), "--labels", str(labels), "--task", "multiclass"]
    assert main(args + ["--split", "50/25/25", "--seed", "1", "--no-progress", "--jobs", "1"]) == 0

    wav_dir, features = Layout().processed("tones") / "wav", Layout().representations("tones", "chroma")
    assert main(["extract", "chroma", str(wav_dir), str(features), "--no-progress"]) == 0
    assert len(list(features.glob("*.npy"))) == 24

    grid = {"hidden_layer_sizes": [[], [32]], "learning_rate": [1e-2], "early_stopping_boredom": [8]}
    runs = train_grid("tones", "chroma", grid_cfgs("tones", "chroma", grid), progress=False)
    assert len(runs) == 2 and all(r["status"] == "trained" for r in runs)
    row = evaluate_pair("tones", "chroma")
    assert row["task"] == "multiclass" and row["test"]["accuracy"] >= 0.8, row["test"]
