"""Does agevision count people right? Per clip: people counted against the identity dev set
(scripts/data/people_dev.json), wrong merges and splits; across the clips: distinct people.

    python scripts/people_count.py [--clips NAME ...] [--pairs] [--align yunet|keypoints] [--json FILE]

Each clip runs as `agevision video --summary` does (full-range detector, tiles, every 3rd
frame, smoothing, identities); each counted person's tracks are matched to the labelled
people by the anchors (a track whose box holds an anchor is that person's). Columns:
labelled people, counted (listed in the summary), unreadable and short (counted apart),
wrong merges (a counted person holding tracks of two labelled people: one per extra
person), splits (a labelled person in two counted people: one per extra), missed
(labelled people in no counted person), tracks no anchor names, embeddings made and the
identity stage's milliseconds per frame. --pairs: the cosine similarity of the track
vectors for pairs of tracks of one labelled person and of two (what SAME_PERSON is chosen
from). --align: how faces are aligned for the identity model (`identity.FaceEmbedder`).
Across clips: every counted person's vector, grouped as within a clip (people of one
clip never joined), against the labels' distinct people.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VIDEOS, run_script  # noqa: E402

LABELS = Path(__file__).resolve().parent / "data" / "people_dev.json"


def run_clip(estimator, path: Path, align: str = "yunet") -> dict:
    """The clip as `agevision video --summary` sees it: summary, records, track vectors."""
    from agevision.defaults import DETECT_EVERY, TILE_SIZE
    from agevision.identity import FaceEmbedder, TrackIdentities
    from agevision.people import PeopleTally
    from agevision.pipeline import FrameProcessor, run_video
    from agevision.records import video_header, with_persons
    from agevision.sources import VideoSource

    class Collect:
        def __init__(self) -> None:
            self.records: list[dict] = []

        def write(self, frame, result) -> None:
            self.records.extend(result.records)

    sink = Collect()
    with VideoSource(path) as src, FrameProcessor(estimator, detector="full", detect_every=DETECT_EVERY,
                                                  tile_size=TILE_SIZE, identify=True) as proc:
        proc.identities = TrackIdentities(FaceEmbedder(align))
        header = video_header(path, src.width, src.height, src.fps, src.frame_count, identities=True)
        result = run_video(proc, src, float(src.fps), [sink])
        persons = proc.people()
        tally = PeopleTally()
        tally.add(header)
        records = [with_persons(r, persons) for r in sink.records]
        for r in records:
            tally.add(r)
        tally.add(result.end_record())
        return {"summary": tally.summary(), "records": records, "vectors": proc.identities.track_vectors(),
                "embeddings": proc.identities.embeddings, "identity_ms": result.times.ms_per_frame()["identity"],
                "frames": result.frames}


def track_labels(records: list[dict], people: list[dict]) -> dict[int, str]:
    """Track id -> the labelled person whose anchor its box holds."""
    by_frame: dict[int, list[dict]] = {}
    for r in records:
        by_frame.setdefault(r["frame"], []).append(r)
    out: dict[int, str] = {}
    for person in people:
        if person["anchors"] == "largest":
            for rs in by_frame.values():
                big = max(rs, key=lambda r: r["box"][2] - r["box"][0])
                out.setdefault(big["track_id"], person["id"])
            continue
        for f, x, y in person["anchors"]:
            hits = [r for r in by_frame.get(f, [])
                    if r["box"][0] <= x <= r["box"][2] and r["box"][1] <= y <= r["box"][3]]
            if hits:
                out[min(hits, key=lambda r: r["box"][2] - r["box"][0])["track_id"]] = person["id"]
    return out


def clip_figures(run: dict, entry: dict) -> dict:
    """The per-clip row (see module doc)."""
    labels = track_labels(run["records"], entry["people"])
    counted = run["summary"].people
    merges = splits = 0
    found: dict[str, set[int]] = {}
    for k, p in enumerate(counted):
        names = {labels[t] for t in p.track_ids if t in labels}
        merges += max(len(names) - 1, 0)
        for name in names:
            found.setdefault(name, set()).add(k)
    splits = sum(len(v) - 1 for v in found.values())
    missed = [p["id"] for p in entry["people"] if p["id"] not in found]
    listed = {t for p in counted for t in p.track_ids}
    return {"clip": entry["clip"], "labelled": len(entry["people"]), "counted": len(counted),
            "unreadable": run["summary"].unreadable, "short": run["summary"].short_tracks, "merges": merges,
            "splits": splits, "missed": missed, "unnamed_tracks": len(listed - set(labels)),
            "embeddings": run["embeddings"], "identity_ms": round(run["identity_ms"], 2)}


def pair_similarities(runs: dict[str, dict], entries: dict[str, dict]) -> tuple[list[float], list[float]]:
    """Cosine similarities of the track vectors: (pairs of one labelled person, pairs of two),
    within each clip."""
    same, other = [], []
    for clip, run in runs.items():
        labels = track_labels(run["records"], entries[clip]["people"])
        ids = sorted(t for t in run["vectors"] if t in labels)
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                s = float(run["vectors"][a] @ run["vectors"][b])
                (same if labels[a] == labels[b] else other).append(s)
    return same, other


def across_clips(runs: dict[str, dict], labels: dict) -> dict:
    """Counted people of all clips grouped by identity (people of one clip never joined)."""
    from agevision.identity import group_tracks, unit

    vectors, seen, where = {}, {}, {}
    for c, (clip, run) in enumerate(sorted(runs.items())):
        for p in run["summary"].people:
            vs = [run["vectors"][t] for t in p.track_ids if t in run["vectors"]]
            if vs:
                key = len(vectors)
                vectors[key] = unit(np.mean(vs, axis=0))
                seen[key] = {c}
                where[key] = (clip, p.person_id)
    groups = group_tracks(vectors, seen)
    joined = {}
    for key, g in groups.items():
        joined.setdefault(g, []).append(where[key])
    links = [sorted({clip for clip, _ in v}) for v in joined.values() if len(v) > 1]
    truth = [sorted(pair) for pair in labels.get("same_person_across_clips", [])]
    n_labelled = sum(len(e["people"]) for e in labels["clips"] if e["clip"] in runs) - sum(
        len(p) - 1 for p in truth if all(c in runs for c in p))
    return {"distinct": len(joined), "labelled": n_labelled, "links": links, "expected_links": truth}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="*", default=[], help="only clips whose names contain one of these")
    ap.add_argument("--pairs", action="store_true", help="print the same / different similarity figures")
    ap.add_argument("--align", choices=("yunet", "keypoints"), default="yunet",
                    help="face alignment for the identity model (default: what agevision uses)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()

    from agevision.model.estimator import Estimator
    from agevision.pipeline import share_cpu

    labels = json.loads(LABELS.read_text())
    entries = {e["clip"]: e for e in labels["clips"] if not args.clips or any(c in e["clip"] for c in args.clips)}
    estimator = Estimator()
    share_cpu(estimator)
    runs, rows = {}, []
    for clip, entry in entries.items():
        runs[clip] = run_clip(estimator, VIDEOS / clip, args.align)
        rows.append(clip_figures(runs[clip], entry))
        print(f"  {clip}: done", file=sys.stderr)
    head = f"{'clip':44s} {'labelled':>8s} {'counted':>7s} {'unread':>6s} {'short':>5s} {'merges':>6s} " \
           f"{'splits':>6s} {'unnamed':>7s} {'embeds':>6s} {'id ms/fr':>8s}  missed"
    print(head)
    for r in rows:
        print(f"{r['clip'][:44]:44s} {r['labelled']:8d} {r['counted']:7d} {r['unreadable']:6d} {r['short']:5d} "
              f"{r['merges']:6d} {r['splits']:6d} {r['unnamed_tracks']:7d} {r['embeddings']:6d} "
              f"{r['identity_ms']:8.2f}  {', '.join(r['missed'])}")
    one = [r for r in rows if r["labelled"] == 1]
    print(f"one-person clips: {sum(r['counted'] == 1 for r in one)} of {len(one)} counted 1; "
          f"wrong merges in all: {sum(r['merges'] for r in rows)}; splits: {sum(r['splits'] for r in rows)}")
    out = {"clips": rows}
    if len(runs) > 1:
        cross = across_clips(runs, labels)
        out["across"] = cross
        print(f"across clips: {cross['distinct']} distinct people counted, {cross['labelled']} labelled "
              f"(people counted in a clip, joined across clips); joined: {cross['links']}; "
              f"labelled as one: {cross['expected_links']}")
    if args.pairs:
        same, other = pair_similarities(runs, entries)
        if same and other:
            print(f"track pairs of one person: {len(same)}, similarity min {min(same):.3f}, "
                  f"10th percentile {np.percentile(same, 10):.3f}, median {np.median(same):.3f}")
            print(f"track pairs of two people: {len(other)}, similarity max {max(other):.3f}, "
                  f"99th percentile {np.percentile(other, 99):.3f}")
            out["pairs"] = {"same": same, "other": other}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    run_script(main)
