"""``python -m simulators.video OUTDIR [--seed N] [--fps 10] [--only NAME]``: write the standard clip set."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from simulators.video.camera import Camera
from simulators.video.clips import STANDARD_CLIPS
from simulators.video.output import ClipFiles, write_clip


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulators.video",
                                description="Write labelled synthetic exit-camera clips (video + JSON ground truth).")
    p.add_argument("outdir", type=Path, nargs="?", help="folder to write the clips into")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second (default 10)")
    p.add_argument("--only", action="append", metavar="NAME", help="only this clip (repeatable)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="clips rendered in parallel")
    p.add_argument("--list", action="store_true", help="list the clip names and exit")
    return p


def _one(outdir: Path, name: str, seed: int, fps: float, width: int, height: int) -> tuple[ClipFiles, float]:
    start = time.perf_counter()
    files = write_clip(outdir, name, seed, fps, Camera(width, height))
    return files, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        sys.stdout.write("".join(f"{name}\n" for name in STANDARD_CLIPS))
        return 0
    if args.outdir is None:
        _parser().print_usage(sys.stderr)
        sys.stderr.write("error: OUTDIR is required\n")
        return 2
    names = list(dict.fromkeys(args.only or STANDARD_CLIPS))
    unknown = [n for n in names if n not in STANDARD_CLIPS]
    if unknown:
        sys.stderr.write(f"error: unknown clip(s) {', '.join(unknown)}; known: {', '.join(STANDARD_CLIPS)}\n")
        return 2
    if args.fps <= 0 or args.width < 64 or args.height < 48:
        sys.stderr.write("error: --fps must be positive, the size at least 64x48\n")
        return 2
    start = time.perf_counter()
    jobs = max(1, min(args.jobs, len(names)))
    params = (args.seed, args.fps, args.width, args.height)
    total = 0
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_one, args.outdir, name, *params): name for name in names}
        for done, future in enumerate(as_completed(futures), start=1):
            files, seconds = future.result()
            total += files.frames
            sys.stderr.write(f"[{done}/{len(names)}] {futures[future]}: {files.frames} frames in {seconds:.1f} s "
                             f"-> {files.video}\n")
    sys.stderr.write(f"{len(names)} clip(s), {total} frames in {time.perf_counter() - start:.1f} s "
                     f"(seed {args.seed}) in {args.outdir}\n")
    return 0
