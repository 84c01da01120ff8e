"""`nox -s bench`: save, gzip, our bundle, and loads, measured side by side IN ONE RUN.

Builds realistic images in a throwaway dockerd (the lab's own images are never touched): a base of
``--size-mb`` MB made of partly compressible data (random bytes, base64 text, log lines) imported as
one layer, and three images built FROM it adding 50 %, 33 % and 17 % of that size, like dify-api's
image shared by api/worker/worker_beat. Then, one after the other on warm caches:

- ``docker save > /dev/null`` (the floor), ``docker save | gzip -6`` (the wiki way),
  ``docker save -o plain.tar`` (what a plain load needs), our bundle's save (one stream into zstd);
- ``docker load -i plain.tar`` vs our :func:`scripts.bundle.load.load_images` from the bundle, with every
  image removed before each load.

For each: wall time, output size, peak RSS (``wait4`` of the process tree; ours also self-reported),
and peak extra disk (the output directory plus the daemon's data root, polled). Prints a table and
the ratios against the targets of issue #4. Absolute times are noisy; compare ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.bundle.load import load_images
from scripts.core.console import LOG, human_size, setup_logging, table
from scripts.core.errors import AirgapError
from scripts.engine.client import Engine
from scripts.engine.images import save_compressed
from tests.lab import bench_upgrade
from tests.lab import host as lab
from tests.lab.benchdata import DERIVED, MIB, make_images

TARGETS = {"time": 1.3, "load": 1.3, "disk": 1.1, "rss_mb": 200}


# --- measuring -----------------------------------------------------------------------------------

def tree_bytes(*roots: Path) -> int:
    """Allocated bytes below ``roots`` (hard links counted once); files vanishing meanwhile are skipped."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [r for r in roots if r.exists()]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        total += st.st_blocks * 512
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
    return total


def _hwm(pid: int) -> int:
    """VmHWM (peak RSS of the process's current image, so not inflated by the parent it forked from)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _descendants(roots: set[int]) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, grew = set(roots), True
    while grew:
        new = {pid for pid, ppid in parents.items() if ppid in found and pid not in found}
        found |= new
        grew = bool(new)
    return found


class Watch:
    """Poll, in a thread: the size of the output directory, of the engine's data root, and the peak RSS
    (VmHWM) of every process in the watched process trees."""

    def __init__(self, output: Sequence[Path], engine_root: Sequence[Path], interval: float = 0.1) -> None:
        self.output, self.engine_root, self.interval = list(output), list(engine_root), interval
        self.base_out, self.base_engine = tree_bytes(*self.output), tree_bytes(*self.engine_root)
        self.peak_out = self.peak_engine = 0
        self.pids: set[int] = set()
        self.rss: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def poll(self) -> None:
        for pid in _descendants(self.pids) if self.pids else ():
            hwm = _hwm(pid)
            if hwm:
                try:
                    name = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    continue
                self.rss[pid] = (name, max(hwm, self.rss.get(pid, ("", 0))[1]))
        self.peak_out = max(self.peak_out, tree_bytes(*self.output) - self.base_out)
        self.peak_engine = max(self.peak_engine, tree_bytes(*self.engine_root) - self.base_engine)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.kept_out = tree_bytes(*self.output) - self.base_out
        self.kept_engine = tree_bytes(*self.engine_root) - self.base_engine
        self.peak_out, self.peak_engine = max(self.peak_out, self.kept_out), max(self.peak_engine, self.kept_engine)

    def peak_rss(self, exclude: Sequence[str] = ()) -> tuple[int, str]:
        rows = [(rss, name) for name, rss in self.rss.values() if name not in exclude]
        return max(rows) if rows else (0, "")


@dataclass
class Row:
    name: str
    seconds: float
    output: int | None
    rss: int  # bytes: the largest VmHWM of any process in the pipeline (docker CLI, gzip, python)
    rss_by: str
    disk_out: int  # peak growth of the output directory
    disk_engine: int  # peak growth of the engine's data root (its own temp files; for loads: the images)
    kept_engine: int
    toolkit_rss: int | None = None  # bytes, our Python process alone (self-reported VmHWM)


def run_pipeline(argvs: Sequence[Sequence[str]], env: dict, watch: Watch | None = None,
                 stdout_path: str | None = None) -> tuple[float, str]:
    """``a | b | ...`` with no shell; returns (seconds, stdout of the last process if not redirected)."""
    full_env = {**os.environ, **env}
    procs: list[subprocess.Popen] = []
    out_fh = open(stdout_path, "wb") if stdout_path else None
    start = time.monotonic()
    try:
        for i, argv in enumerate(argvs):
            last = i == len(argvs) - 1
            procs.append(subprocess.Popen(list(argv), env=full_env, stderr=subprocess.PIPE,
                                          stdin=procs[-1].stdout if procs else subprocess.DEVNULL,
                                          stdout=(out_fh or subprocess.PIPE) if last else subprocess.PIPE))
            if watch is not None:
                watch.pids.add(procs[-1].pid)
            if i:
                procs[-2].stdout.close()
        stdout = procs[-1].stdout.read().decode(errors="replace") if procs[-1].stdout else ""
        failed = []
        for proc in procs:
            if watch is not None:
                watch.poll()  # a last look at the tree while it still exists
            proc.wait()
            if proc.returncode:
                failed.append(f"{' '.join(proc.args)} (exit {proc.returncode}): "
                              f"{proc.stderr.read().decode(errors='replace')[-800:]}")
        seconds = time.monotonic() - start
    finally:
        if out_fh:
            out_fh.close()
        for proc in procs:
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
    if failed:
        raise AirgapError("bench step failed: " + "; ".join(failed))
    return seconds, stdout


def measure(name: str, argvs, env: dict, output_root: Path, engine_root: Path, output: Path | None = None,
            **kwargs) -> Row:
    with Watch([output_root], [engine_root]) as watch:
        seconds, stdout = run_pipeline(argvs, env, watch, **kwargs)
    size = tree_bytes(output) if output and output.is_dir() else (output.stat().st_size if output else None)
    toolkit = json.loads(stdout.strip().splitlines()[-1]).get("rss") if stdout.strip().startswith("{") else None
    rss, by = watch.peak_rss()
    LOG.info("bench: %s: %.1fs", name, seconds)
    return Row(name, seconds, size, max(rss, toolkit or 0), by, watch.peak_out, watch.peak_engine,
               watch.kept_engine, toolkit)


def _remove_all(engine: Engine) -> None:
    """Empty the throwaway daemon; children first, so a few rounds (a base goes once its children are gone)."""
    for _ in range(5):
        ids = engine.run(["images", "-aq"], mutates=False).stdout.split()
        if not ids:
            return
        engine.run(["image", "rm", "--force", *sorted(set(ids))], check=False)
    raise AirgapError(f"bench: could not empty the throwaway daemon before a load: {ids}")


def _ids(engine: Engine, refs: Sequence[str]) -> dict[str, str]:
    return {r: engine.inspect_image(r)["Id"] for r in refs}


def run(size_mb: int, workdir: Path | None = None) -> list[Row]:
    work = Path(tempfile.mkdtemp(prefix="dal-bench-", dir=workdir))
    try:
        with lab.Dockerd() as engine:
            data_root = Path(engine.facts()["data_root"])
            refs = make_images(engine, size_mb, work / "build")
            ids = _ids(engine, refs)
            env = dict(engine.env)
            py = [sys.executable, "-m", "tests.lab.bench"]
            py_env = {**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
            out = work / "out"
            out.mkdir()

            def step(name, argvs, step_env=env, output=None, **kwargs):
                return measure(name, argvs, step_env, out, data_root, output=output, **kwargs)

            run_pipeline([["docker", "save", *refs]], env, stdout_path=os.devnull)  # warm the page cache
            rows = [step("docker save > /dev/null", [["docker", "save", *refs]], stdout_path=os.devnull)]
            gz = out / "images.tar.gz"
            rows.append(step("docker save | gzip -6", [["docker", "save", *refs], ["gzip", "-6"]], output=gz,
                             stdout_path=str(gz)))
            gz.unlink()
            zs = out / "images.tar.zst"
            rows.append(step("docker save | zstd -3 -T0 (CLI)",
                             [["docker", "save", *refs], ["zstd", "-q", "-3", "-T0"]], output=zs, stdout_path=str(zs)))
            zs.unlink()
            ours = out / "bundle"
            rows.append(step("ours: save | zstd (bundle)",
                             [[*py, "_save", str(ours), *(f"{r}={ids[r]}" for r in refs)]], py_env, output=ours))
            plain = out / "plain.tar"
            rows.append(step("docker save -o plain.tar", [["docker", "save", "-o", str(plain), *refs]], output=plain))
            _remove_all(engine)
            rows.append(step("docker load -i plain.tar", [["docker", "load", "-q", "-i", str(plain)]]))
            if _ids(engine, refs) != ids:
                raise AirgapError("bench: the plain load gave other image ids")
            _remove_all(engine)
            rows.append(step("ours: load_images(bundle)", [[*py, "_load", str(ours)]], py_env))
            if _ids(engine, refs) != ids:
                raise AirgapError("bench: our load gave other image ids")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def report(rows: list[Row], size_mb: int) -> str:
    by = {r.name: r for r in rows}
    raw, gz, plain_load = by["docker save > /dev/null"], by["docker save | gzip -6"], by["docker load -i plain.tar"]
    ours, ours_load = by["ours: save | zstd (bundle)"], by["ours: load_images(bundle)"]
    zcli = by["docker save | zstd -3 -T0 (CLI)"]

    def mb(n):
        return "-" if n is None else human_size(n)

    lines = [f"bench: base {size_mb} MB + derived {', '.join(f'{n} +{int(size_mb * f)} MB' for n, f in DERIVED)} "
             f"(3 images saved, sharing the base layer); throwaway dockerd; one run, warm page cache", "",
             table(["step", "time", "output", "peak RSS (process)", "toolkit RSS", "peak disk: output",
                    "peak disk: engine"],
                   [[r.name, f"{r.seconds:.1f} s", mb(r.output), f"{mb(r.rss)} ({r.rss_by})", mb(r.toolkit_rss),
                     mb(r.disk_out), mb(r.disk_engine)] for r in rows]),
             "", "peak disk: engine = growth of dockerd's data root during the step: for saves docker's own export "
             "temp (the same for every save), for loads the loaded images plus docker's unpack temp", ""]
    rss = max(ours.toolkit_rss or 0, ours_load.toolkit_rss or 0)
    checks = [
        ("bundle time / raw save time", ours.seconds / raw.seconds, f"<= {TARGETS['time']}",
         ours.seconds / raw.seconds <= TARGETS["time"]),
        ("bundle size / gzip size", ours.output / gz.output, "<= 1.0", ours.output <= gz.output),
        ("gzip time / raw save time", gz.seconds / raw.seconds, "(reference)", None),
        ("zstd CLI time / raw save time", zcli.seconds / raw.seconds, "(reference: the same zstd -3, all cores)",
         None),
        ("our load time / plain load time", ours_load.seconds / plain_load.seconds, f"<= {TARGETS['load']}",
         ours_load.seconds / plain_load.seconds <= TARGETS["load"]),
        ("bundle peak output disk / bundle size", ours.disk_out / ours.output, f"<= {TARGETS['disk']}",
         ours.disk_out / ours.output <= TARGETS["disk"]),
        ("our load peak output disk (MB)", ours_load.disk_out / MIB, "0 (no temp file)", ours_load.disk_out < MIB),
        ("toolkit peak RSS (MB)", rss / MIB, f"< {TARGETS['rss_mb']}", rss / MIB < TARGETS["rss_mb"]),
    ]
    lines.append(table(["ratio", "value", "target", "result"],
                       [[n, f"{v:.2f}", t, "-" if ok is None else "PASS" if ok else "FAIL"]
                        for n, v, t, ok in checks]))
    return "\n".join(lines)


# --- the child processes whose memory we measure -------------------------------------------------

def _self_hwm() -> int:
    return _hwm(os.getpid())


def _child_save(out: Path, pairs: Sequence[str]) -> None:

    engine = Engine("docker", env={k: os.environ[k] for k in ("DOCKER_HOST",) if k in os.environ})
    out.mkdir(parents=True)
    images = [dict(zip(("ref", "id"), pair.rsplit("=", 1))) for pair in pairs]
    archive = save_compressed(engine, [i["ref"] for i in images], out, "images.tar.zst", "zstd", None, 0)
    (out / "manifest.json").write_text(json.dumps({"images": images, "image_archive": archive}))
    print(json.dumps({"rss": _self_hwm()}))


def _child_load(bundle: Path) -> None:

    engine = Engine("docker", env={k: os.environ[k] for k in ("DOCKER_HOST",) if k in os.environ})
    load_images(engine, bundle, json.loads((bundle / "manifest.json").read_text()))
    print(json.dumps({"rss": _self_hwm()}))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    if argv[:1] == ["_save"]:
        _child_save(Path(argv[1]), argv[2:])
        return 0
    if argv[:1] == ["_load"]:
        _child_load(Path(argv[1]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m tests.lab.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=300,
                        help="size of the shared base layer in MB; derived layers add 50/33/17 %% (default 300)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where outputs are written (default: the system temp dir; removed afterwards)")
    parser.add_argument("--case", choices=("save", "upgrade", "all"), default="all",
                        help="save: save/gzip/zstd/bundle and loads; upgrade: full vs image-level vs layer-level "
                             "delta vs ideal (tests/lab/bench_upgrade.py); all: both (default)")
    args = parser.parse_args(argv)
    if args.size_mb < 1:
        parser.error("--size-mb must be at least 1")
    try:
        if args.case in ("save", "all"):
            print(report(run(args.size_mb, args.workdir), args.size_mb), flush=True)
        if args.case in ("upgrade", "all"):
            cuts, ideal, facts = bench_upgrade.run(args.size_mb, args.workdir)
            print(("\n" if args.case == "all" else "") + bench_upgrade.report(cuts, ideal, facts, args.size_mb))
    except AirgapError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
