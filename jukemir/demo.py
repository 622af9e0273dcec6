"""The demo: the whole pipeline on the synthetic key dataset, in a few minutes on a laptop.

generate (24 keys, chords and melodies) -> extract chroma and mfcc -> train a
small probe grid -> pick probes on validation -> test metrics table -> report.
Everything lands in the cache (``$JUKEMIR_CACHE_DIR``) like a real run, so each
step can be inspected or re-run with the ordinary commands; a second run
reuses what is already there.
"""

from __future__ import annotations

import sys
import time

from .cache import Layout

DATASET = "synthetic"
REPRESENTATIONS = ("chroma", "mfcc")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_demo(
    *,
    songs_per_key: int = 6,
    clips_per_song: int = 2,
    clip_seconds: float = 3.0,
    grid: str = "demo",
    report: bool = True,
    progress: bool = True,
) -> dict:
    """Run the demo pipeline; return ``{"rows", "table", "report", "paths", "seconds"}``.

    The results table (key score and accuracy x 100 on the synthetic test
    split) is also printed to stdout; progress goes to stderr.
    """
    from .datasets import synthetic
    from .probe.evaluate import evaluations, results_table
    from .probe.grid import named_grid_cfgs
    from .probe.train import train_grid
    from .representations.folder import run_folder

    start = time.time()
    layout = Layout()
    _say(f"[1/5] generating the synthetic key dataset into {layout.processed(DATASET)}")
    data_dir = synthetic.generate(
        layout.processed(DATASET),
        songs_per_key=songs_per_key,
        clips_per_song=clips_per_song,
        clip_seconds=clip_seconds,
        progress=progress,
    )
    for i, rep in enumerate(REPRESENTATIONS):
        warm = (
            " (the first file also loads librosa and compiles its kernels: a few seconds)" if i == 0 else ""
        )
        _say(f"[2/5] extracting {rep}{warm}")
        result = run_folder(rep, layout.wav(DATASET), layout.representations(DATASET, rep), progress=progress)
        if not result.ok:
            raise RuntimeError(
                f"extracting {rep} failed for {len(result.failed)} file(s); see the messages above"
            )
    for rep in REPRESENTATIONS:
        cfgs = named_grid_cfgs(DATASET, rep, grid)
        _say(f"[3/5] training {len(cfgs)} probes ({grid} grid) on {rep}")
        summaries = train_grid(DATASET, rep, cfgs, progress=progress, layout=layout)
        reused = sum(s["status"] != "trained" for s in summaries)
        if reused:
            _say(f"      {reused} of them were already trained on these features: reused")
    _say("[4/5] selecting probes on validation and evaluating on test")
    rows = list(evaluations([DATASET], list(REPRESENTATIONS), split="test", layout=layout))  # two small pairs
    table = results_table(rows)
    print(table, flush=True)
    report_path = None
    if report:
        _say("[5/5] writing the report")
        from .report import write_report

        report_path = write_report(rows=rows, layout=layout)  # from the probes and features loaded above
    rows = [dict(row) for row in rows]
    seconds = time.time() - start
    paths = {
        "audio and meta.json": data_dir,
        "features": layout.representations(DATASET),
        "probes": layout.probes(DATASET),
    }
    _say(f"\ndemo finished in {seconds:.0f} s. Outputs:")
    for what, where in paths.items():
        _say(f"  {what:20s} {where}")
    if report_path is not None:
        _say(f"  {'report':20s} {report_path}")
    return {"rows": rows, "table": table, "report": report_path, "paths": paths, "seconds": seconds}
