#!/usr/bin/env python3
"""Runs every runtime benchmark of karx beside its peers and reports the targets.

    scripts/bench [--quick] [--rounds R] [--reps K] [--min-time S] [--only W,...]
                  [--no-docs] [--json PATH] [--strict]
                  [--net-duration S] [--net-warmup S] [--net-threads N] [--bulk-bytes N]

(scripts/bench builds the producers first and then runs this file; it can also be run alone
once they are built.) What it does, in order:

1. The throughput workloads (spawn_many, spawn_many_inside, chained_spawn, ping_pong,
   yield_many) and the fork-join ones (fib, skynet: karx, oneTBB and Go, no Asio idiom; their
   target is against oneTBB). For each workload, R rounds: the Google Benchmark binary
   karx_runtime_bench (karx, oneTBB, Boost.Asio; K repetitions, interleaved at random) and the
   Go peer (threads 1 and 2, K repetitions), alternating which of the two goes first. Every
   (workload, threads, library) gets R x K samples of ns per operation.
   The karx.sync workloads (channel_1to1, channel_4to4: a bounded channel, karx beside Go's
   channels and oneTBB's concurrent_bounded_queue with blocking std::threads, target karx <= Go;
   mutex_uncontended, mutex_contended: karx::Mutex beside std::mutex in the same karx tasks and
   Go's sync.Mutex) run the same way with karx_sync_bench in place of karx_runtime_bench, at the
   processor counts of their definition (SYNC below). `--only sync` selects the four.
   The karx.net workloads (echo_1conn, echo_64conn: 64-byte request/response over 1 and 64
   connections, requests/s and p50/p99 latency; bulk_1gib: 1 GiB echoed back on one
   connection, GB/s) start karx's, Boost.Asio's and Go's echo servers once per round, each on
   a free loopback port with --net-threads threads (default 2), and run the one client
   (karx_echo_client) K times against each, the servers alternated within the round. Targets:
   karx's requests/s >= the best peer's, karx's p99 <= Go's, karx's GB/s >= 0.9 x the best
   peer's. `--only net` selects the three.
2. The workloads that are not throughput loops, each measurement in its own process: blocking
   (karx with three variants, Go, oneTBB, Asio), blocked_or_busy (karx: a ticker beside 100
   unannounced blocking calls; threads started for 200 CPU-bound polls), idle (CPU time of an
   idle runtime), memory (bytes per parked task), forkjoin_memory (peak RSS of fib and
   skynet), and the task layer (bench/summarize.sh on karx_task_bench).
3. Medians, min and max; karx's median over the best peer's; each target met or MISSED. One
   plain-text report on stdout, everything (raw samples, machine, load) as JSON, the region
   between <!-- results:begin --> and <!-- results:end --> of docs/bench.md, and the chart
   docs/bench-runtime.png (gnuplot, bench/chart.gp).

A producer that is missing or fails is reported as "missing (reason)" where its numbers would
be, listed under PROBLEMS at the end, and makes the exit status 1; everything else is still
measured and written. Exit status: 0 all producers ran (targets may be MISSED; --strict makes a
MISSED target exit 1 too), 1 a producer was missing or failed, 2 bad arguments.

Python 3 standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (workload, unit, target for karx median / best peer median)
THROUGHPUT = [
    ("spawn_many", "ns/task", 1.0),
    ("spawn_many_inside", "ns/task", 0.67),
    ("chained_spawn", "ns/spawn", 0.67),
    ("ping_pong", "ns/round", 0.67),
    ("yield_many", "ns/yield", 0.67),
    ("fib", "ns/task", 0.5),
    ("skynet", "ns/task", 0.5),
]
THROUGHPUT_NAMES = [w for w, _, _ in THROUGHPUT]
# The karx.sync workloads (karx_sync_bench and the Go peer): (workload, unit, processors, target
# for karx's median / Go's median, or None). GOMAXPROCS is the processor count; oneTBB's threads
# are pinned to that many CPUs.
SYNC = [
    ("channel_1to1", "ns/message", (1, 2), 1.0),
    ("channel_4to4", "ns/message", (1, 2), 1.0),
    ("mutex_uncontended", "ns/lock", (1,), None),
    ("mutex_contended", "ns/lock", (2,), None),
]
SYNC_NAMES = [w for w, _, _, _ in SYNC]
# The sync table's columns, and the C++ peer of each workload ("karx ÷ C++ peer").
SYNC_LIBS = ("karx", "go", "tbb", "stdmutex")
SYNC_CPP_PEER = {"channel_1to1": "tbb", "channel_4to4": "tbb",
                 "mutex_uncontended": "stdmutex", "mutex_contended": "stdmutex"}
UNITS = {**{w: u for w, u, _ in THROUGHPUT}, **{w: u for w, u, _, _ in SYNC}}
SPECIAL_NAMES = ["blocking", "blocked_or_busy", "idle", "memory", "forkjoin_memory", "task_layer"]
# The karx.net workloads (issue 15): each library's echo server (a subprocess on a free loopback
# port) driven by the one client, bench/net/echo_client.cpp. (workload, client mode, connections,
# client threads). The servers run --net-threads threads (karx processors, Asio io_context
# threads, GOMAXPROCS; default NET_PROCESSORS) on the same cores as the client.
NET = [
    ("echo_1conn", "echo", 1, 1),
    ("echo_64conn", "echo", 64, 2),
    ("bulk_1gib", "bulk", 1, 1),
]
NET_NAMES = [w for w, _, _, _ in NET]
NET_LIBS = ("karx", "asio", "go")
NET_PROCESSORS = 2
NET_MESSAGE_BYTES = 64
NET_RPS_TARGET = 1.0     # echo: karx's requests/s ≥ the best peer's (and p99 ≤ Go's)
NET_BULK_TARGET = 0.9    # bulk: karx's GB/s ≥ 0.9 × the best peer's
NET_SERVER_START_S = 20  # a server must print its port within this
PROBE_SECTIONS = ("blocking", "blocked_or_busy", "idle", "memory", "forkjoin_memory")
THREADS = (1, 2)
GBENCH_LIBS = ("karx", "tbb", "asio", "tbbinvoke", "stdmutex")
# The table's columns; the chart draws the first four (CHART_LIBS).
LIBS = ("karx", "tbb", "asio", "go", "tbbinvoke")
CHART_LIBS = ("karx", "tbb", "asio", "go")
DEFAULT_LIBS = ("karx", "tbb", "asio", "go")
PEERS = ("tbb", "asio", "go")
LIB_TITLES = {"karx": "karx", "tbb": "oneTBB", "asio": "Boost.Asio", "go": "Go",
              "tbbinvoke": "oneTBB parallel_invoke", "stdmutex": "std::mutex"}
# Fork-join has no Boost.Asio idiom (a handler cannot wait for its children); its target is
# against oneTBB, written with a task_group and with parallel_invoke (the better of the two);
# Go runs for comparison.
WORKLOAD_LIBS = {"fib": ("karx", "tbb", "go", "tbbinvoke"), "skynet": ("karx", "tbb", "go", "tbbinvoke"),
                 **{w: ("karx", "go", SYNC_CPP_PEER[w]) for w in SYNC_NAMES}}
RATIO_PEERS = {"fib": ("tbb", "tbbinvoke"), "skynet": ("tbb", "tbbinvoke")}


def libs_of(workload):
    return WORKLOAD_LIBS.get(workload, DEFAULT_LIBS)


def gbench_libs_of(workload):
    return tuple(lib for lib in GBENCH_LIBS if lib in libs_of(workload))


def ratio_peers_of(workload):
    return RATIO_PEERS.get(workload, PEERS)


def threads_of(workload):
    """The thread (processor) counts a workload runs with."""
    return next((t for w, _, t, _ in SYNC if w == workload), THREADS)


def producer_of(workload):
    """The Google Benchmark binary that holds a workload's C++ libraries (its name in reports)."""
    return "karx_sync_bench" if workload in SYNC_NAMES else "karx_runtime_bench"

# Targets of the special workloads.
BLOCKING_SLACK_MS = 2.0           # karx default: max gap <= threshold + 2 ms (and <= Go's)
BLOCKING_DEFAULT_THRESHOLD_MS = 10.0
BLOCKING_CALL_MAX_GAP_MS = 2.0    # karx::blocking(): max gap <= 2 ms
BATCH_MIN_SPEED = 0.9             # batch_quiet_ms / batch_blocked_ms >= 0.9
IDLE_MAX_CPU_MS_PER_S = 1.0       # karx idle < 1 ms CPU per second
MEMORY_MAX_BYTES = 128.0          # karx <= 128 bytes per task ...
MEMORY_GO_FRACTION = 0.1          # ... and <= 1/10 of Go's
FORKJOIN_RSS_MAX_TBB = 2.0        # karx's peak RSS in fib / skynet <= 2x oneTBB's (issue 12)
BLOCKING_CALLS_MAX_LATENESS_MS = 20.0  # 100 unannounced 20-ms blocking calls: 5 ms ticker late <= 20 ms
CPU_BOUND_MAX_EXTRA_THREADS = 4        # 200 CPU-bound polls of 30 ms: <= 4 threads started
TASK_LAYER_MAX_RATIO = 1.0        # Async spawn+run+join / (malloc+free + 2 RMWs) <= 1 (issue 11)
TASK_LAYER_NUM = "BM_karx_async_spawn_run_join"
TASK_LAYER_DEN = "BM_baseline_malloc64_free_2rmw"

RESULTS_BEGIN = "<!-- results:begin -->"
RESULTS_END = "<!-- results:end -->"

TIME_UNITS_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def log(msg: str) -> None:
    print(f"run_all: {msg}", file=sys.stderr, flush=True)


def rel(path: str) -> str:
    """A path relative to the project root when it is inside it (for messages and docs)."""
    try:
        r = os.path.relpath(path, ROOT)
    except ValueError:
        return path
    return path if r.startswith("..") else r


# ---------------------------------------------------------------------------------------------
# Running producers


class Result:
    def __init__(self, argv, stdout="", stderr="", seconds=0.0, error=None, detail=None):
        self.argv = argv
        self.stdout = stdout
        self.stderr = stderr
        self.seconds = seconds
        self.error = error      # short reason (for table cells), None when the process succeeded
        self.detail = detail    # longer reason (stderr tail) for the problem list

    @property
    def ok(self) -> bool:
        return self.error is None


def stderr_tail(text: str, lines: int = 3) -> str:
    tail = [l.strip() for l in text.strip().splitlines() if l.strip()][-lines:]
    return " | ".join(tail)


def run_process(argv, timeout, env=None) -> Result:
    """Runs one producer in its own process group; a timeout kills the whole group."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace", start_new_session=True)
    except FileNotFoundError:
        return Result(argv, error="not built", detail=f"{argv[0]} not found")
    except PermissionError:
        return Result(argv, error="not executable", detail=f"{argv[0]} is not executable")
    except OSError as e:
        return Result(argv, error="cannot start", detail=f"{argv[0]}: {e}")
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        return Result(argv, out, err, time.monotonic() - start, error=f"timed out after {timeout:g} s",
                      detail=stderr_tail(err))
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        if proc.returncode < 0:
            try:
                why = signal.Signals(-proc.returncode).name
            except ValueError:
                why = f"signal {-proc.returncode}"
        else:
            why = f"exit {proc.returncode}"
        return Result(argv, out, err, seconds, error=why, detail=stderr_tail(err))
    return Result(argv, out, err, seconds)


def json_lines(text: str):
    """The JSON objects of a producer's output, one per line; other lines are ignored."""
    objs = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            objs.append(obj)
    return objs


class Problems:
    """Every producer that was missing or failed: loud on stderr at once, listed at the end."""

    def __init__(self):
        self.items = []  # dicts: what, reason, detail, count

    def add(self, what: str, reason: str, detail: str | None = None) -> None:
        for item in self.items:
            if item["what"] == what and item["reason"] == reason:
                item["count"] += 1
                return
        self.items.append({"what": what, "reason": reason, "detail": detail or "", "count": 1})
        log(f"MISSING {what}: {reason}" + (f" ({detail})" if detail else ""))


def executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def missing_reason(path: str) -> tuple[str, str]:
    """Why a producer binary is not there: scripts/bench leaves <binary>.build.log on a failed build."""
    log_path = path + ".build.log"
    if os.path.isfile(log_path):
        return "build failed", f"{rel(path)} did not build; see {rel(log_path)}"
    if os.path.exists(path):
        return "not executable", f"{rel(path)} is not executable"
    return "not built", f"{rel(path)} does not exist"


# ---------------------------------------------------------------------------------------------
# Throughput workloads


class Throughput:
    def __init__(self, args, problems: Problems):
        self.args = args
        self.problems = problems
        self.samples = {}     # (workload, threads, lib) -> [ns/op]
        self.failures = {}    # (workload, threads, lib) -> [short reasons]
        self.units = {}       # (workload, threads, lib) -> unit reported by the producer
        self.raw_gbench = []  # iteration entries of the Google Benchmark binaries, with the round
        self.raw_go = []      # JSON lines of the Go peer, with the round
        self.gbench_context = {}  # producer -> its first JSON context
        self.go_min_time_suffix = ""  # "s" if the Go peer wants a duration ("0.2s")
        self.runs = []        # what ran, how long

    def fail(self, workload, threads, lib, reason, detail=None, what=None):
        self.failures.setdefault((workload, threads, lib), []).append(reason)
        self.problems.add(what or f"{lib} {workload}/{threads}", reason, detail)

    def run_gbench(self, workload: str, rnd: int) -> None:
        producer = producer_of(workload)
        binary = self.args.sync_bench if producer == "karx_sync_bench" else self.args.runtime_bench
        threads_run = threads_of(workload)
        if not executable(binary):
            reason, detail = missing_reason(binary)
            for lib in gbench_libs_of(workload):
                for t in threads_run:
                    self.failures.setdefault((workload, t, lib), []).append(reason)
            self.problems.add(producer, reason, detail)
            return
        argv = [binary, f"--benchmark_filter=^({'|'.join(gbench_libs_of(workload))})_{workload}/",
                f"--benchmark_repetitions={self.args.reps}",
                "--benchmark_enable_random_interleaving=true",
                f"--benchmark_min_time={self.args.min_time:g}", "--benchmark_format=json"]
        res = run_process(argv, self.args.timeout)
        self.runs.append({"round": rnd, "producer": producer, "workload": workload,
                          "seconds": round(res.seconds, 2), "error": res.error})
        log(f"  {producer} {workload}: {res.seconds:.1f} s" + (f" ({res.error})" if res.error else ""))
        doc = None
        if res.stdout.strip():
            try:
                doc = json.loads(res.stdout)
            except json.JSONDecodeError:
                doc = None
        if doc is None:
            reason = res.error or "no JSON"
            for lib in gbench_libs_of(workload):
                for t in threads_run:
                    self.failures.setdefault((workload, t, lib), []).append(reason)
            self.problems.add(f"{producer} {workload}", reason,
                              res.detail or stderr_tail(res.stderr) or "its output was not Google Benchmark JSON")
            return
        self.gbench_context.setdefault(producer, doc.get("context"))
        seen = set()
        errors = {}
        for b in doc.get("benchmarks", []):
            m = re.match(r"^([a-z]+)_(\w+?)/(\d+)", b.get("run_name") or b.get("name", ""))
            if not m or m.group(1) not in GBENCH_LIBS or m.group(2) != workload:
                continue
            lib, threads = m.group(1), int(m.group(3))
            if threads not in threads_run:
                continue
            if b.get("error_occurred"):
                errors[(lib, threads)] = b.get("error_message", "error")
                continue
            if b.get("run_type", "iteration") != "iteration":
                continue
            try:
                ns = float(b["real_time"]) * TIME_UNITS_NS[b.get("time_unit", "ns")] / float(b["ops"])
            except (KeyError, ValueError, ZeroDivisionError):
                errors[(lib, threads)] = "no ops counter"
                continue
            seen.add((lib, threads))
            self.samples.setdefault((workload, threads, lib), []).append(ns)
            self.units[(workload, threads, lib)] = UNITS[workload]
            self.raw_gbench.append({"round": rnd, "producer": producer, **b})
        for lib in gbench_libs_of(workload):
            for t in threads_run:
                if (lib, t) in seen:
                    continue
                if (lib, t) in errors:
                    self.fail(workload, t, lib, "error", errors[(lib, t)])
                elif res.error:
                    self.fail(workload, t, lib, res.error, res.detail)
                else:
                    self.fail(workload, t, lib, f"not in {producer}",
                              f"no {lib}_{workload}/{t} benchmark", what=f"{lib} {workload}/{t}")
        if res.error and seen:
            self.problems.add(f"{producer} {workload}", res.error, res.detail)

    def run_go(self, workload: str, threads: int, rnd: int) -> None:
        binary = self.args.go_peer
        if not executable(binary):
            reason, detail = missing_reason(binary)
            self.failures.setdefault((workload, threads, "go"), []).append(reason)
            self.problems.add("Go peer", reason, detail)
            return

        def argv():
            return [binary, workload, "-threads", str(threads), "-reps", str(self.args.reps),
                    "-min-time", f"{self.args.min_time:g}{self.go_min_time_suffix}"]

        res = run_process(argv(), self.args.timeout)
        if (not res.ok and not self.go_min_time_suffix and "min-time" in res.stderr
                and ("invalid" in res.stderr or "unit" in res.stderr)):
            # A Go peer whose -min-time is a time.Duration wants "0.2s": say so once and go on.
            self.go_min_time_suffix = "s"
            log("  the Go peer wants -min-time as a duration; passing "
                f"{self.args.min_time:g}s from now on")
            res = run_process(argv(), self.args.timeout)
        self.runs.append({"round": rnd, "producer": "go", "workload": workload, "threads": threads,
                          "seconds": round(res.seconds, 2), "error": res.error})
        log(f"  go peer {workload}/{threads}: {res.seconds:.1f} s" + (f" ({res.error})" if res.error else ""))
        got = 0
        for obj in json_lines(res.stdout):
            if obj.get("kind") != "throughput" or obj.get("workload") != workload:
                continue
            if int(obj.get("threads", -1)) != threads:
                continue
            self.raw_go.append({"round": rnd, **obj})
            values = [float(v) for v in obj.get("ns_per_op", []) if isinstance(v, (int, float))]
            self.samples.setdefault((workload, threads, "go"), []).extend(values)
            got += len(values)
            unit = obj.get("unit")
            if unit:
                self.units[(workload, threads, "go")] = unit
                want = UNITS[workload]
                if unit != want:
                    log(f"  warning: the Go peer reports {workload} in {unit}, the others in {want}")
        if got == 0:
            self.fail(workload, threads, "go", res.error or "no samples",
                      res.detail or "no throughput line with ns_per_op")
        elif res.error:
            self.problems.add(f"go {workload}/{threads}", res.error, res.detail)

    def run(self, workloads) -> None:
        for wi, workload in enumerate(workloads):
            for rnd in range(self.args.rounds):
                go_first = (rnd + wi) % 2 == 1
                log(f"{workload}: round {rnd + 1}/{self.args.rounds} "
                    f"({'Go peer' if go_first else producer_of(workload)} first)")
                steps = [lambda: self.run_gbench(workload, rnd),
                         lambda: [self.run_go(workload, t, rnd) for t in threads_of(workload)]]
                if go_first:
                    steps.reverse()
                for step in steps:
                    step()

    def entry(self, workload, threads, lib):
        """One library's samples and stats in a row."""
        xs = self.samples.get((workload, threads, lib), [])
        fails = sorted(set(self.failures.get((workload, threads, lib), [])))
        entry = {"samples": xs, "failures": fails}
        if lib not in libs_of(workload):
            entry["not_applicable"] = True
        if xs:
            entry.update(n=len(xs), median=statistics.median(xs), min=min(xs), max=max(xs))
        return entry

    def rows(self, workloads):
        """One row per (workload, threads): per library stats, best peer, ratio, target, status."""
        expected = self.args.rounds * self.args.reps
        rows = []
        for workload, unit, target in THROUGHPUT:
            if workload not in workloads:
                continue
            for t in THREADS:
                row = {"workload": workload, "threads": t, "unit": unit, "target": target,
                       "expected_samples": expected, "libs": {}}
                for lib in LIBS:
                    row["libs"][lib] = self.entry(workload, t, lib)
                ratio_peers = ratio_peers_of(workload)
                peers = [(row["libs"][p]["median"], p) for p in ratio_peers if "median" in row["libs"][p]]
                missing_peers = [p for p in ratio_peers if "median" not in row["libs"][p]]
                karx = row["libs"]["karx"]
                row["missing_peers"] = missing_peers
                if peers:
                    best_median, best = min(peers)
                    row["best_peer"] = best
                    row["best_peer_median"] = best_median
                if "median" not in karx:
                    row["status"] = "missing (karx)"
                elif not peers:
                    row["status"] = "missing (peers)"
                else:
                    row["ratio"] = karx["median"] / row["best_peer_median"]
                    row["met"] = row["ratio"] <= target
                    row["status"] = "met" if row["met"] else "MISSED"
                    if missing_peers:
                        row["status"] += " (without " + ", ".join(missing_peers) + ")"
                rows.append(row)
        return rows

    def sync_rows(self, workloads):
        """One row per (sync workload, processors): per library stats, karx ÷ Go, karx ÷ the C++
        peer, and the target against Go where the workload has one."""
        expected = self.args.rounds * self.args.reps
        rows = []
        for workload, unit, threads, target in SYNC:
            if workload not in workloads:
                continue
            for t in threads:
                row = {"workload": workload, "threads": t, "unit": unit, "target": target,
                       "expected_samples": expected, "cpp_peer": SYNC_CPP_PEER[workload],
                       "libs": {lib: self.entry(workload, t, lib) for lib in SYNC_LIBS}, "ratios": {}}
                karx = row["libs"]["karx"]
                for peer in ("go", row["cpp_peer"]):
                    if "median" in karx and "median" in row["libs"][peer]:
                        row["ratios"][peer] = karx["median"] / row["libs"][peer]["median"]
                if target is not None:
                    if "median" not in karx:
                        row["status"] = "missing (karx)"
                    elif "go" not in row["ratios"]:
                        row["status"] = "missing (Go)"
                    else:
                        row["met"] = row["ratios"]["go"] <= target
                        row["status"] = "met" if row["met"] else "MISSED"
                rows.append(row)
        return rows


# ---------------------------------------------------------------------------------------------
# karx.net: echo servers driven by one client


class NetServer:
    """One library's echo server: a subprocess that prints {"kind":"listening","port":P} and
    serves until its stdin closes (so that none outlives the runner) or it is killed."""

    def __init__(self, lib, argv):
        self.lib, self.argv = lib, argv
        self.proc = None
        self.port = None
        self.stderr_file = None

    def start(self):
        """Starts the server and waits for its port. Returns None, or (reason, detail)."""
        self.stderr_file = tempfile.TemporaryFile(mode="w+", prefix="karx-net-server-")
        try:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self.stderr_file, start_new_session=True)
        except OSError as e:
            return "cannot start", f"{self.argv[0]}: {e}"
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + NET_SERVER_START_S
        buf = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
                for obj in json_lines(buf.decode("utf-8", "replace")):
                    if obj.get("kind") == "listening" and isinstance(obj.get("port"), int):
                        self.port = obj["port"]
                        return None
            elif self.proc.poll() is not None:
                break
        exited = self.proc.poll()  # before stop(), which kills a server that never listened
        self.stop()
        reason = f"exit {exited}" if exited else "did not listen"
        return reason, self.stderr_tail() or (f"{rel(self.argv[0])} exited before printing its port" if exited
                                              else f"no listening line within {NET_SERVER_START_S} s")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self):
        """User + system CPU time of the server so far (/proc/PID/stat), or None."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, AttributeError):
            return None

    def stderr_tail(self, lines=3):
        if self.stderr_file is None:
            return ""
        try:
            self.stderr_file.seek(0)
            return stderr_tail(self.stderr_file.read(), lines)
        except (OSError, ValueError):
            return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # --until-stdin-closes: the server exits by itself
            except OSError:
                pass
            for sig, wait in ((None, 2), (signal.SIGTERM, 2), (signal.SIGKILL, 5)):
                if sig is not None:
                    try:
                        os.killpg(self.proc.pid, sig)
                    except ProcessLookupError:
                        pass
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f:
                    f.close()
            except OSError:
                pass


class Net:
    def __init__(self, args, problems: Problems):
        self.args = args
        self.problems = problems
        self.samples = {}   # (workload, lib) -> [client JSON objects]
        self.failures = {}  # (workload, lib) -> [short reasons]
        self.runs = []

    def fail(self, workload, lib, reason, detail=None, what=None):
        self.failures.setdefault((workload, lib), []).append(reason)
        self.problems.add(what or f"{lib} {workload}", reason, detail)

    def server_argv(self, lib):
        a, n = self.args, str(self.args.net_threads)
        if lib == "karx":
            return [a.karx_echo_server, "--processors", n, "--until-stdin-closes"]
        if lib == "asio":
            return [a.asio_echo_server, "--threads", n, "--until-stdin-closes"]
        return [a.go_peer, "echo_server", "-threads", n, "-until-stdin-closes"]

    def server_missing(self, lib, path):
        """(reason, detail, what) when a server binary is not there, else None."""
        if executable(path):
            return None
        reason, detail = missing_reason(path)
        return reason, detail, {"karx": "karx_echo_server", "asio": "karx_asio_echo_server",
                                "go": "Go peer"}[lib]

    def client_argv(self, workload, port):
        _, mode, conns, threads = next(n for n in NET if n[0] == workload)
        argv = [self.args.echo_client, "--port", str(port), mode]
        if mode == "echo":
            argv += ["--connections", str(conns), "--threads", str(threads), "--size", str(NET_MESSAGE_BYTES),
                     "--warmup", f"{self.args.net_warmup:g}", "--duration", f"{self.args.net_duration:g}",
                     "--assign", self.args.net_assign]
            timeout = self.args.net_warmup + self.args.net_duration + 60
        else:
            argv += ["--bytes", str(self.args.bulk_bytes)]
            timeout = self.args.bulk_bytes / 20e6 + 60  # 20 MB/s would be very slow
        return argv, min(timeout, self.args.timeout)

    def run_round(self, workload, wi, rnd):
        libs = list(NET_LIBS)
        shift = (rnd + wi) % len(libs)
        libs = libs[shift:] + libs[:shift]
        log(f"{workload}: round {rnd + 1}/{self.args.rounds} (servers in the order {', '.join(libs)})")
        if not executable(self.args.echo_client):
            reason, detail = missing_reason(self.args.echo_client)
            for lib in libs:
                self.failures.setdefault((workload, lib), []).append(reason)
            self.problems.add("karx_echo_client", reason, detail)
            return
        servers = {}
        for lib in libs:
            argv = self.server_argv(lib)
            missing = self.server_missing(lib, argv[0])
            if missing:
                reason, detail, what = missing
                self.failures.setdefault((workload, lib), []).append(reason)
                self.problems.add(what, reason, detail)
                continue
            server = NetServer(lib, argv)
            err = server.start()
            if err:
                self.fail(workload, lib, err[0], err[1], what=f"{lib} echo server")
                continue
            servers[lib] = server
        try:
            for rep in range(self.args.reps):
                for lib in libs:
                    server = servers.get(lib)
                    if server is None:
                        continue
                    if not server.alive():
                        self.fail(workload, lib, "server died", server.stderr_tail(), what=f"{lib} echo server")
                        del servers[lib]
                        server.stop()
                        continue
                    argv, timeout = self.client_argv(workload, server.port)
                    cpu0 = server.cpu_seconds()
                    res = run_process(argv, timeout)
                    cpu1 = server.cpu_seconds()
                    self.runs.append({"round": rnd, "rep": rep, "producer": "karx_echo_client", "server": lib,
                                      "workload": workload, "seconds": round(res.seconds, 2), "error": res.error})
                    objs = [o for o in json_lines(res.stdout) if o.get("kind") in ("net_echo", "net_bulk")]
                    if not objs or res.error:
                        detail = res.detail or "no net_echo/net_bulk line"
                        if not server.alive():
                            detail = f"the server died: {server.stderr_tail()}"
                        self.fail(workload, lib, res.error or "no output", detail, what=f"client against {lib} {workload}")
                        continue
                    o = dict(objs[0])
                    if cpu0 is not None and cpu1 is not None:
                        # The server's CPU time over the whole client run (warm-up included), per
                        # echo or per GB: less at the mercy of the machine's other load than
                        # requests/s, and what the server leaves of the shared CPUs to the client.
                        o["server_cpu_s"] = round(cpu1 - cpu0, 3)
                        if o["kind"] == "net_echo" and o.get("requests_total"):
                            o["server_cpu_us_per_request"] = (cpu1 - cpu0) / o["requests_total"] * 1e6
                        elif o["kind"] == "net_bulk" and o.get("bytes"):
                            o["server_cpu_s_per_gb"] = (cpu1 - cpu0) / (o["bytes"] / 1e9)
                    self.samples.setdefault((workload, lib), []).append({"round": rnd, "rep": rep, **o})
                    log(f"  {lib} {workload}: " + (f"{o.get('rps', 0):,.0f} req/s, p50 {o.get('p50_us', 0):.1f} µs, "
                                                    f"p99 {o.get('p99_us', 0):.1f} µs" if o["kind"] == "net_echo"
                                                    else f"{o.get('gbps', 0):.2f} GB/s"))
        finally:
            for server in servers.values():
                server.stop()

    def run(self, workloads):
        for wi, workload in enumerate(workloads):
            for rnd in range(self.args.rounds):
                self.run_round(workload, wi, rnd)

    def entry(self, workload, lib, field):
        objs = self.samples.get((workload, lib), [])
        xs = [float(o[field]) for o in objs if isinstance(o.get(field), (int, float))]
        entry = {"samples": xs, "failures": sorted(set(self.failures.get((workload, lib), [])))}
        if xs:
            entry.update(n=len(xs), median=statistics.median(xs), min=min(xs), max=max(xs))
            for extra in ("p50_us", "p99_us", "server_cpu_us_per_request", "server_cpu_s_per_gb"):
                ys = [float(o[extra]) for o in objs if isinstance(o.get(extra), (int, float))]
                if ys:
                    entry[extra] = statistics.median(ys)
                    entry[extra + "_max"] = max(ys)
        return entry

    def rows(self, workloads):
        expected = self.args.rounds * self.args.reps
        rows = []
        for workload, mode, conns, threads in NET:
            if workload not in workloads:
                continue
            field, unit = ("rps", "requests/s") if mode == "echo" else ("gbps", "GB/s")
            row = {"workload": workload, "mode": mode, "connections": conns, "client_threads": threads,
                   "server_threads": self.args.net_threads, "unit": unit, "expected_samples": expected,
                   "libs": {lib: self.entry(workload, lib, field) for lib in NET_LIBS}, "checks": []}
            if mode == "echo":
                row["message_bytes"] = NET_MESSAGE_BYTES
            else:
                row["bytes"] = self.args.bulk_bytes
            karx = row["libs"]["karx"]
            peers = [(row["libs"][p]["median"], p) for p in NET_LIBS if p != "karx" and "median" in row["libs"][p]]
            if peers:
                best_median, best = max(peers)  # more is better
                row["best_peer"], row["best_peer_median"] = best, best_median
                if "median" in karx:
                    row["ratio"] = karx["median"] / best_median
            ratio = row.get("ratio")
            if mode == "echo":
                row["checks"].append(check(f"req/s ≥ {NET_RPS_TARGET:g}× best peer's", ratio, NET_RPS_TARGET,
                                           None if ratio is None else ratio >= NET_RPS_TARGET))
                kp, gp = karx.get("p99_us"), row["libs"]["go"].get("p99_us")
                row["checks"].append(check("p99 ≤ Go's", kp, gp, None if kp is None or gp is None else kp <= gp))
            else:
                row["checks"].append(check(f"GB/s ≥ {NET_BULK_TARGET:g}× best peer's", ratio, NET_BULK_TARGET,
                                           None if ratio is None else ratio >= NET_BULK_TARGET))
            missing = None
            if "median" not in karx:
                missing = "karx: " + (", ".join(karx["failures"]) or "no samples")
            row["status"] = status_of(row["checks"], missing)
            rows.append(row)
        return rows


# ---------------------------------------------------------------------------------------------
# Blocking, idle, memory, task layer


def probe_jobs(args):
    """(section, library, key, argv) of every special measurement, in the order they run."""
    p, g = args.probes, args.go_peer
    return [
        ("blocking", "karx", "default", [p, "blocking", "karx", "--variant", "default"]),
        ("blocking", "karx", "threshold-1ms", [p, "blocking", "karx", "--variant", "threshold-1ms"]),
        ("blocking", "karx", "blocking-call", [p, "blocking", "karx", "--variant", "blocking-call"]),
        ("blocking", "go", "", [g, "blocking"]),
        ("blocking", "tbb", "", [p, "blocking", "tbb"]),
        ("blocking", "asio", "", [p, "blocking", "asio"]),
        ("blocked_or_busy", "karx", "blocking_calls", [p, "blocked_or_busy", "karx", "--workload", "blocking_calls"]),
        ("blocked_or_busy", "karx", "cpu_bound", [p, "blocked_or_busy", "karx", "--workload", "cpu_bound"]),
        ("idle", "karx", "", [p, "idle", "karx"]),
        ("idle", "tbb", "", [p, "idle", "tbb"]),
        ("idle", "asio", "", [p, "idle", "asio"]),
        ("idle", "go", "", [g, "idle"]),
        ("memory", "karx", "coroutine", [p, "memory", "karx", "--future", "coroutine"]),
        ("memory", "karx", "struct", [p, "memory", "karx", "--future", "struct"]),
        ("memory", "tbb", "", [p, "memory", "tbb"]),
        ("memory", "go", "", [g, "memory"]),
        *[("forkjoin_memory", lib, w, argv)
          for w in ("fib", "skynet")
          for lib, argv in (("karx", [p, "forkjoin_memory", "karx", "--workload", w]),
                            ("tbb", [p, "forkjoin_memory", "tbb", "--workload", w]),
                            ("go", [g, f"{w}_memory"]))],
    ]


def run_probes(args, sections, problems: Problems):
    """Runs each probe in its own process; returns {section: [row]} (a row per JSON line, or a
    row with "missing" when the probe failed)."""
    out = {s: [] for s in PROBE_SECTIONS}
    runs = []
    for section, lib, key, argv in probe_jobs(args):
        if section not in sections:
            continue
        what = f"{section} {lib}" + (f" {key}" if key else "")
        base = {"library": lib, "key": key}
        if not executable(argv[0]):
            reason, detail = missing_reason(argv[0])
            problems.add("Go peer" if lib == "go" else "karx_runtime_probes", reason, detail)
            out[section].append({**base, "missing": reason})
            continue
        log(f"{what}: {shlex.join([rel(argv[0])] + argv[1:])}")
        res = run_process(argv, args.timeout)
        runs.append({"producer": rel(argv[0]), "argv": argv[1:], "seconds": round(res.seconds, 2),
                     "error": res.error})
        log(f"  {res.seconds:.1f} s" + (f" ({res.error})" if res.error else ""))
        objs = [o for o in json_lines(res.stdout) if o.get("kind") == section]
        if not objs:
            reason = res.error or "no output"
            problems.add(what, reason, res.detail or f"no JSON line of kind {section!r}")
            out[section].append({**base, "missing": reason, "stderr": stderr_tail(res.stderr, 10)})
            continue
        if res.error:
            problems.add(what, res.error, res.detail)
        for o in objs:
            out[section].append({**base, **o, "library": o.get("library", lib)})
    return out, runs


def num(row, field):
    v = row.get(field)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def check(label, value, bound, ok):
    """One target check: ok is True (met), False (MISSED) or None (cannot tell: data missing)."""
    return {"target": label, "value": value, "bound": bound, "ok": ok}


def evaluate_blocking(rows):
    for r in rows:
        q, b = num(r, "batch_quiet_ms"), num(r, "batch_blocked_ms")
        r["batch_speed"] = q / b if q is not None and b else None
    go = next((r for r in rows if r["library"] == "go" and "missing" not in r), None)
    go_gap = num(go, "max_gap_ms") if go else None
    for r in rows:
        r["checks"] = []
        if r["library"] != "karx" or "missing" in r:
            continue
        gap, speed = num(r, "max_gap_ms"), r["batch_speed"]
        if r["key"] == "default":
            m = re.search(r"(\d+(?:\.\d+)?)\s*ms", str(r.get("variant", "")))
            threshold = float(m.group(1)) if m else BLOCKING_DEFAULT_THRESHOLD_MS
            bound = threshold + BLOCKING_SLACK_MS
            r["checks"].append(check(f"gap ≤ {bound:g} ms", gap, bound,
                                     None if gap is None else gap <= bound))
            r["checks"].append(check("gap ≤ Go's", gap, go_gap,
                                     None if gap is None or go_gap is None else gap <= go_gap))
        elif r["key"] == "blocking-call":
            r["checks"].append(check(f"gap ≤ {BLOCKING_CALL_MAX_GAP_MS:g} ms", gap, BLOCKING_CALL_MAX_GAP_MS,
                                     None if gap is None else gap <= BLOCKING_CALL_MAX_GAP_MS))
        r["checks"].append(check(f"batch ≥ {BATCH_MIN_SPEED:g}× quiet", speed, BATCH_MIN_SPEED,
                                 None if speed is None else speed >= BATCH_MIN_SPEED))


def evaluate_blocked_or_busy(rows):
    for r in rows:
        r["checks"] = []
        if "missing" in r:
            continue
        if r["key"] == "blocking_calls":
            v = num(r, "worst_lateness_ms")
            r["checks"].append(check(f"ticker late ≤ {BLOCKING_CALLS_MAX_LATENESS_MS:g} ms", v,
                                     BLOCKING_CALLS_MAX_LATENESS_MS,
                                     None if v is None else v <= BLOCKING_CALLS_MAX_LATENESS_MS))
        elif r["key"] == "cpu_bound":
            v = num(r, "extra_threads")
            r["checks"].append(check(f"≤ {CPU_BOUND_MAX_EXTRA_THREADS} threads started", v,
                                     CPU_BOUND_MAX_EXTRA_THREADS,
                                     None if v is None else v <= CPU_BOUND_MAX_EXTRA_THREADS))


def evaluate_idle(rows):
    for r in rows:
        r["checks"] = []
        if r["library"] == "karx" and "missing" not in r:
            v = num(r, "cpu_ms_per_s")
            r["checks"].append(check(f"< {IDLE_MAX_CPU_MS_PER_S:g} ms CPU/s", v, IDLE_MAX_CPU_MS_PER_S,
                                     None if v is None else v < IDLE_MAX_CPU_MS_PER_S))


def evaluate_memory(rows):
    go = next((r for r in rows if r["library"] == "go" and "missing" not in r), None)
    go_bytes = num(go, "bytes_per_task") if go else None
    for r in rows:
        r["checks"] = []
        if r["library"] != "karx" or "missing" in r:
            continue
        v = num(r, "bytes_per_task")
        r["checks"].append(check(f"≤ {MEMORY_MAX_BYTES:g} B/task", v, MEMORY_MAX_BYTES,
                                 None if v is None else v <= MEMORY_MAX_BYTES))
        bound = go_bytes * MEMORY_GO_FRACTION if go_bytes is not None else None
        r["checks"].append(check("≤ Go's ÷ 10", v, bound,
                                 None if v is None or bound is None else v <= bound))


def evaluate_forkjoin_memory(rows):
    for r in rows:
        r["checks"] = []
        if r["library"] != "karx" or "missing" in r:
            continue
        tbb = next((x for x in rows if x["library"] == "tbb" and x.get("key") == r.get("key") and "missing" not in x),
                   None)
        v = num(r, "peak_rss_mb")
        bound = num(tbb, "peak_rss_mb") * FORKJOIN_RSS_MAX_TBB if tbb and num(tbb, "peak_rss_mb") else None
        r["checks"].append(check(f"peak RSS ≤ {FORKJOIN_RSS_MAX_TBB:g}× oneTBB's", v, bound,
                                 None if v is None or bound is None else v <= bound))


def run_task_layer(args, problems: Problems):
    out = {"checks": []}
    binary = args.task_bench
    if not executable(binary):
        reason, detail = missing_reason(binary)
        problems.add("karx_task_bench", reason, detail)
        out["missing"] = reason
        out["checks"].append(check(f"≤ {TASK_LAYER_MAX_RATIO:g}", None,
                                   TASK_LAYER_MAX_RATIO, None))
        return out
    json_path = os.path.join(os.path.dirname(os.path.abspath(args.json)), "run_all_task_layer.json")
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    if os.path.exists(json_path):
        os.remove(json_path)
    env = dict(os.environ, KARX_BENCH_JSON=json_path, KARX_BENCH_REPETITIONS=str(args.reps))
    argv = [os.path.join(ROOT, "bench", "summarize.sh"), binary, f"--benchmark_min_time={args.min_time:g}"]
    log(f"task layer: KARX_BENCH_JSON={rel(json_path)} KARX_BENCH_REPETITIONS={args.reps} "
        f"{shlex.join([rel(a) for a in argv])}")
    res = run_process(argv, args.timeout, env=env)
    log(f"  {res.seconds:.1f} s" + (f" ({res.error})" if res.error else ""))
    out["json"] = rel(json_path)
    out["summary"] = res.stdout
    medians = {}
    try:
        with open(json_path) as f:
            doc = json.load(f)
        for b in doc.get("benchmarks", []):
            if b.get("aggregate_name") == "median" and not b.get("error_occurred"):
                medians[b["run_name"]] = float(b["cpu_time"]) * TIME_UNITS_NS[b.get("time_unit", "ns")]
    except (OSError, json.JSONDecodeError, KeyError, ValueError):
        pass
    out["medians_ns"] = medians
    num_v, den_v = medians.get(TASK_LAYER_NUM), medians.get(TASK_LAYER_DEN)
    ratio = num_v / den_v if num_v is not None and den_v else None
    out["ratio"] = ratio
    if ratio is None:
        reason = res.error or "no medians"
        problems.add("karx_task_bench", reason,
                     res.detail or f"no median of {TASK_LAYER_NUM} and {TASK_LAYER_DEN} in {rel(json_path)}")
        out["missing"] = reason
    elif res.error:
        problems.add("karx_task_bench", res.error, res.detail)
    out["checks"].append(check(f"≤ {TASK_LAYER_MAX_RATIO:g}", ratio,
                               TASK_LAYER_MAX_RATIO, None if ratio is None else ratio <= TASK_LAYER_MAX_RATIO))
    return out


def status_of(checks, missing=None):
    if missing:
        return f"missing ({missing})"
    if not checks:
        return ""
    failed = [c["target"] for c in checks if c["ok"] is False]
    unknown = [c["target"] for c in checks if c["ok"] is None]
    if failed:
        return "MISSED" if len(checks) == 1 else "MISSED: " + "; ".join(failed)
    if unknown:
        return "missing data: " + "; ".join(unknown)
    return "met"


# ---------------------------------------------------------------------------------------------
# Formatting


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def fmt(v, digits=None):
    if v is None:
        return "–"
    if digits is not None:
        return f"{v:.{digits}f}"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def throughput_cell(entry, expected):
    if entry.get("not_applicable"):
        return "–"
    if "median" not in entry:
        return "missing (" + (", ".join(entry["failures"]) or "no samples") + ")"
    s = f"{fmt(entry['median'])} ({fmt(entry['min'])}–{fmt(entry['max'])})"
    if entry["n"] < expected:
        s += f" n={entry['n']}/{expected}"
    return s


def net_cell(entry, expected, digits):
    if "median" not in entry:
        return "missing (" + (", ".join(entry["failures"]) or "no samples") + ")"
    s = (f"{entry['median']:,.{digits}f} ({entry['min']:,.{digits}f}–{entry['max']:,.{digits}f})")
    if entry["n"] < expected:
        s += f" n={entry['n']}/{expected}"
    return s


class Table:
    def __init__(self, title, header, align, note=None):
        self.title, self.header, self.align, self.note = title, header, align, note
        self.rows = []

    def add(self, *cells):
        self.rows.append([str(c) for c in cells])

    def text(self):
        widths = [len(h) for h in self.header]
        for r in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, r)]

        def line(cells):
            parts = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, self.align)]
            return "  ".join(parts).rstrip()

        out = [self.title, line(self.header), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in self.rows]
        if self.note:
            out.append(self.note)
        return "\n".join(out)

    def markdown(self):
        def esc(c):
            return c.replace("|", "\\|")

        out = [f"### {self.title}", "", "| " + " | ".join(esc(h) for h in self.header) + " |",
               "|" + "|".join("---:" if a == "r" else "---" for a in self.align) + "|"]
        out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in self.rows]
        if self.note:
            out += ["", self.note]
        return "\n".join(out)


def targets_text(checks):
    return "; ".join(c["target"] for c in checks)


def build_tables(report):
    tables = []
    opts = report["options"]
    expected = opts["rounds"] * opts["reps"]
    rows = report.get("throughput", [])
    if rows:
        t = Table("Throughput: median ns per operation (min–max) over "
                  f"{plural(opts['rounds'], 'round')} × {plural(opts['reps'], 'repetition')}",
                  ["workload", "threads", "unit", "karx", "oneTBB", "Boost.Asio", "Go",
                   "oneTBB parallel_invoke", "karx ÷ best peer", "target", "status"],
                  ["l", "r", "l", "r", "r", "r", "r", "r", "r", "l", "l"])
        for r in rows:
            ratio = f"{r['ratio']:.2f} ({LIB_TITLES[r['best_peer']]})" if "ratio" in r else "–"
            t.add(r["workload"], r["threads"], r["unit"],
                  *[throughput_cell(r["libs"][lib], expected) for lib in LIBS],
                  ratio, f"≤ {r['target']:g}", r["status"])
        tables.append(t)
    sync_rows = report.get("sync", [])
    if sync_rows:
        t = Table("karx.sync: median ns per message or per lock (min–max) over "
                  f"{plural(opts['rounds'], 'round')} × {plural(opts['reps'], 'repetition')}",
                  ["workload", "processors", "unit", "karx", "Go", "oneTBB queue, std::threads",
                   "std::mutex in karx tasks", "karx ÷ Go", "karx ÷ C++ peer", "target", "status"],
                  ["l", "r", "l", "r", "r", "r", "r", "r", "r", "l", "l"])
        for r in sync_rows:
            ratios = r["ratios"]
            t.add(r["workload"], r["threads"], r["unit"],
                  *[throughput_cell(r["libs"][lib], expected) for lib in SYNC_LIBS],
                  fmt(ratios["go"], 2) if "go" in ratios else "–",
                  fmt(ratios[r["cpp_peer"]], 2) if r["cpp_peer"] in ratios else "–",
                  f"karx ÷ Go ≤ {r['target']:g}" if r["target"] is not None else "",
                  r.get("status", ""))
        tables.append(t)
    net_rows = report.get("net", [])
    echo_rows = [r for r in net_rows if r["mode"] == "echo"]
    if echo_rows:
        t = Table("karx.net echo: 64-byte request/response on loopback, requests/s median (min–max) and "
                  f"the medians of p50 and p99 over {plural(opts['rounds'], 'round')} × "
                  f"{plural(opts['reps'], 'repetition')} ({plural(opts['net_threads'], 'server thread')}, "
                  f"client on the same CPUs, connections dealt to its threads {opts.get('net_assign', 'round-robin')})",
                  ["workload", "connections", "server", "requests/s", "p50 µs", "p99 µs (worst)",
                   "server CPU µs/request", "karx ÷ best peer", "target", "status"],
                  ["l", "r", "l", "r", "r", "r", "r", "r", "l", "l"])
        for r in echo_rows:
            for lib in NET_LIBS:
                e = r["libs"][lib]
                karx_row = lib == "karx"
                ratio = (f"{r['ratio']:.2f} ({LIB_TITLES[r['best_peer']]})" if "ratio" in r else "–") if karx_row else ""
                p99 = f"{fmt(e['p99_us'])} ({fmt(e['p99_us_max'])})" if "p99_us" in e else "–"
                t.add(r["workload"], r["connections"], LIB_TITLES[lib], net_cell(e, expected, 0),
                      fmt(e.get("p50_us")), p99, fmt(e.get("server_cpu_us_per_request")), ratio,
                      targets_text(r["checks"]) if karx_row else "",
                      r["status"] if karx_row else "")
        tables.append(t)
    bulk_rows = [r for r in net_rows if r["mode"] == "bulk"]
    if bulk_rows:
        t = Table("karx.net bulk: one connection, echoed back, GB/s median (min–max) over "
                  f"{plural(opts['rounds'], 'round')} × {plural(opts['reps'], 'repetition')}",
                  ["workload", "bytes", "server", "GB/s", "server CPU s/GB", "karx ÷ best peer", "target", "status"],
                  ["l", "r", "l", "r", "r", "r", "l", "l"])
        for r in bulk_rows:
            for lib in NET_LIBS:
                e = r["libs"][lib]
                karx_row = lib == "karx"
                ratio = (f"{r['ratio']:.2f} ({LIB_TITLES[r['best_peer']]})" if "ratio" in r else "–") if karx_row else ""
                t.add(r["workload"], f"{r['bytes']:,}", LIB_TITLES[lib], net_cell(e, expected, 2),
                      fmt(e.get("server_cpu_s_per_gb")), ratio,
                      targets_text(r["checks"]) if karx_row else "", r["status"] if karx_row else "")
        tables.append(t)
    if "blocking" in report:
        t = Table("Blocking inside a task: the longest gap in a ticker task while another task blocks",
                  ["library", "variant", "threads", "max gap ms", "stall ms", "batch quiet ms",
                   "batch blocked ms", "quiet ÷ blocked", "threads started", "blocked ms", "target",
                   "status"],
                  ["l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "l", "l"])
        for r in report["blocking"]:
            variant = r.get("variant") or r["key"] or "–"
            if "missing" in r:
                t.add(LIB_TITLES.get(r["library"], r["library"]), variant, "", "", "", "", "", "", "", "",
                      targets_text(r.get("checks", [])), f"missing ({r['missing']})")
                continue
            t.add(LIB_TITLES.get(r["library"], r["library"]), variant, r.get("threads", "–"),
                  fmt(num(r, "max_gap_ms")), fmt(num(r, "stall_ms")), fmt(num(r, "batch_quiet_ms")),
                  fmt(num(r, "batch_blocked_ms")), fmt(r.get("batch_speed"), 2),
                  r.get("threads_started", "–"), fmt(num(r, "blocked_ms")),
                  targets_text(r["checks"]), status_of(r["checks"]))
        tables.append(t)
    if "blocked_or_busy" in report:
        t = Table("Blocked or busy: 100 unannounced 20-ms blocking calls beside a 5 ms ticker; 200 polls "
                  "computing 30 ms (2 processors, threshold 10 ms)",
                  ["library", "workload", "tasks", "ticker worst lateness ms", "blocked hand-offs",
                   "busy hand-offs", "threads started", "wall ms", "target", "status"],
                  ["l", "l", "r", "r", "r", "r", "r", "r", "l", "l"])
        for r in report["blocked_or_busy"]:
            lib = LIB_TITLES.get(r["library"], r["library"])
            if "missing" in r:
                t.add(lib, r["key"], "", "", "", "", "", "", targets_text(r.get("checks", [])),
                      f"missing ({r['missing']})")
                continue
            t.add(lib, r["key"], r.get("tasks", "–"), fmt(num(r, "worst_lateness_ms")),
                  r.get("blocked_handoffs", "–"), r.get("busy_handoffs", "–"), r.get("extra_threads", "–"),
                  fmt(num(r, "wall_ms")), targets_text(r["checks"]), status_of(r["checks"]))
        tables.append(t)
    if "idle" in report:
        t = Table("Idle: CPU time of an idle runtime", ["library", "threads", "CPU ms per s", "target", "status"],
                  ["l", "r", "r", "l", "l"])
        for r in report["idle"]:
            lib = LIB_TITLES.get(r["library"], r["library"])
            if "missing" in r:
                t.add(lib, "", "", targets_text(r.get("checks", [])), f"missing ({r['missing']})")
                continue
            t.add(lib, r.get("threads", "–"), fmt(num(r, "cpu_ms_per_s"), 3), targets_text(r["checks"]),
                  status_of(r["checks"]))
        tables.append(t)
    if "memory" in report:
        t = Table("Memory: bytes per parked task",
                  ["library", "variant", "tasks", "bytes per task", "RSS before MB", "RSS after MB",
                   "target", "status"],
                  ["l", "l", "r", "r", "r", "r", "l", "l"])
        for r in report["memory"]:
            lib = LIB_TITLES.get(r["library"], r["library"])
            variant = r.get("variant") or r["key"] or "–"
            if "missing" in r:
                t.add(lib, variant, "", "", "", "", targets_text(r.get("checks", [])), f"missing ({r['missing']})")
                continue
            tasks = r.get("tasks")
            t.add(lib, variant, f"{tasks:,}" if isinstance(tasks, int) else (tasks or "–"),
                  fmt(num(r, "bytes_per_task")), fmt(num(r, "rss_before_mb")), fmt(num(r, "rss_after_mb")),
                  targets_text(r["checks"]), status_of(r["checks"]))
        tables.append(t)
    if "forkjoin_memory" in report:
        t = Table("Fork-join memory: peak RSS of one run (2 threads)",
                  ["library", "workload", "RSS before MB", "peak RSS MB", "peak growth MB", "target", "status"],
                  ["l", "l", "r", "r", "r", "l", "l"])
        for r in report["forkjoin_memory"]:
            lib = LIB_TITLES.get(r["library"], r["library"])
            if "missing" in r:
                t.add(lib, r["key"], "", "", "", targets_text(r.get("checks", [])), f"missing ({r['missing']})")
                continue
            t.add(lib, r.get("workload", r["key"]), fmt(num(r, "rss_before_mb")), fmt(num(r, "peak_rss_mb")),
                  fmt(num(r, "peak_growth_mb")), targets_text(r["checks"]), status_of(r["checks"]))
        tables.append(t)
    if "task_layer" in report:
        tl = report["task_layer"]
        t = Table("Task layer (bench/summarize.sh): median CPU time",
                  ["measure", "value", "target", "status"], ["l", "r", "l", "l"])
        med = tl.get("medians_ns", {})
        t.add(f"{TASK_LAYER_NUM} ns", fmt(med.get(TASK_LAYER_NUM)), "", "")
        t.add(f"{TASK_LAYER_DEN} ns", fmt(med.get(TASK_LAYER_DEN)), "", "")
        t.add("Async spawn+run+join ÷ baseline", fmt(tl.get("ratio"), 2) if tl.get("ratio") is not None else "–",
              targets_text(tl["checks"]), status_of(tl["checks"], tl.get("missing")))
        tables.append(t)
    return tables


def all_checks(report):
    """Every target with its status: (area, what, status) for the summary line."""
    out = []
    for r in report.get("throughput", []):
        st = "met" if r.get("met") is True else "MISSED" if r.get("met") is False else "missing"
        out.append((f"{r['workload']}/{r['threads']}", f"karx ÷ best peer ≤ {r['target']:g}", st))
    for r in report.get("sync", []):
        if r["target"] is None:
            continue
        st = "met" if r.get("met") is True else "MISSED" if r.get("met") is False else "missing"
        out.append((f"{r['workload']}/{r['threads']}", f"karx ÷ Go ≤ {r['target']:g}", st))
    for r in report.get("net", []):
        for c in r["checks"]:
            st = "met" if c["ok"] is True else "MISSED" if c["ok"] is False else "missing"
            out.append((r["workload"], c["target"], st))
    for section in PROBE_SECTIONS:
        for r in report.get(section, []):
            for c in r.get("checks", []):
                st = "met" if c["ok"] is True else "MISSED" if c["ok"] is False else "missing"
                out.append((f"{section} {r['library']} {r['key']}".strip(), c["target"], st))
            if r["library"] == "karx" and "missing" in r:
                out.append((f"{section} karx {r['key']}".strip(), "(all)", "missing"))
    tl = report.get("task_layer")
    if tl:
        for c in tl["checks"]:
            st = "met" if c["ok"] is True else "MISSED" if c["ok"] is False else "missing"
            out.append(("task layer", "Async spawn+run+join ÷ baseline " + c["target"], st))
    return out


# ---------------------------------------------------------------------------------------------
# Machine, docs, chart


def read_first(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info():
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()
    mem = read_first("/proc/meminfo", "MemTotal")
    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    go_version = ""
    if shutil.which("go"):
        try:
            go_version = subprocess.run(["go", "version"], capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return {"nproc": nproc, "cpu_count": os.cpu_count(), "cpu_model": read_first("/proc/cpuinfo", "model name"),
            "mem_total": mem, "kernel": platform.release(), "python": platform.python_version(),
            "go": go_version, "git_commit": commit, "git_dirty": dirty}


def machine_line(report):
    m = report["machine"]
    load0, load1 = report["load_average_start"], report["load_average_end"]
    commit = (m["git_commit"][:10] or "unknown") + (" + uncommitted changes" if m["git_dirty"] else "")
    return (f"{m['nproc']} CPUs ({m['cpu_model'] or 'unknown CPU'}), load average {load0[0]:.2f} at the start "
            f"and {load1[0]:.2f} at the end (1 min), commit {commit}")


def docs_region(report, tables, chart_rel):
    o = report["options"]
    lines = [
        "<!-- Generated by bench/run_all.py (scripts/bench): edits between the results markers are overwritten. -->",
        "## Latest results (scripts/bench)",
        "",
        f"`{report['command']}` on {report['date']}: {plural(o['rounds'], 'round')} × "
        f"{plural(o['reps'], 'repetition')}, "
        f"min time {o['min_time']:g} s per repetition"
        + (" (a smoke test: --quick)" if o["quick"] else "") + ".",
        "",
        f"Machine: {machine_line(report)}. Raw samples: `{report['json_rel']}`.",
    ]
    if "throughput" in report:
        lines += ["", "Throughput: median ns per operation with min–max; karx ÷ best peer is karx's median "
                  "over the smallest median among oneTBB, Boost.Asio and Go in the same run."]
    if "sync" in report:
        lines += ["", "karx.sync: median ns per message (channels: capacity 64, 100,000 messages per "
                  "iteration) or per lock/unlock with min–max; karx ÷ Go and karx ÷ C++ peer are "
                  "medians over medians in the same run (the C++ peer: oneTBB's concurrent_bounded_queue "
                  "with a blocking std::thread per producer and consumer, pinned to as many CPUs as "
                  "processors; std::mutex held across no await in the same karx tasks)."]
    if "net" in report:
        lines += ["", "karx.net: karx's, Boost.Asio's and Go's echo servers "
                  f"({plural(report['options']['net_threads'], 'thread')} each) "
                  "on loopback, each driven by the same client (bench/net/echo_client.cpp) on the same "
                  "CPUs; requests/s and GB/s are medians with min–max, p50 and p99 the medians of each "
                  "run's percentiles (worst run's p99 in brackets); karx ÷ best peer is karx's median over "
                  "the larger peer median. Server CPU is the server process's user + system time over "
                  "each client run, warm-up included, per echo or per GB (median): less at the mercy of "
                  "the machine's other load than the rates."]
    if chart_rel:
        lines += ["", f"![karx and its peers: median ns per operation relative to the best peer]({chart_rel})"]
    for t in tables:
        lines += ["", t.markdown()]
    met = sum(1 for c in all_checks(report) if c[2] == "met")
    total = len(all_checks(report))
    lines += ["", f"Targets met: {met} of {total}."]
    if report["problems"]:
        lines += ["", "Producers missing or failed in this run:", ""]
        lines += [f"- {p['what']}: {p['reason']}" + (f" ({p['detail']})" if p["detail"] else "").replace("|", "\\|")
                  for p in report["problems"]]
    return "\n".join(lines)


def write_docs(path, region):
    with open(path) as f:
        text = f.read()
    block = f"{RESULTS_BEGIN}\n{region}\n{RESULTS_END}"
    lines = text.split("\n")
    try:
        begin = lines.index(RESULTS_BEGIN)
        end = lines.index(RESULTS_END, begin)
        new = "\n".join(lines[:begin]) + ("\n" if begin else "") + block + "\n" + "\n".join(lines[end + 1:])
    except ValueError:
        # No markers yet: put the region before the first section heading.
        idx = next((i for i, l in enumerate(lines) if l.startswith("## ")), len(lines))
        log(f"{rel(path)} had no {RESULTS_BEGIN} / {RESULTS_END} markers: adding them before line {idx + 1}")
        new = "\n".join(lines[:idx]) + "\n" + block + "\n\n" + "\n".join(lines[idx:])
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".bench.md.")
    with os.fdopen(fd, "w") as f:
        f.write(new)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def gp_string(s):
    return "'" + s.replace("'", "''") + "'"


def draw_chart(report, out_png, data_path, problems: Problems):
    """Writes the chart's data file and runs gnuplot with bench/chart.gp. Returns True if drawn."""
    rows = [r for r in report.get("throughput", []) if "best_peer_median" in r]
    if not rows:
        log("chart: no throughput row with a peer to normalise to; not drawn")
        return False
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        problems.add("chart", "no gnuplot", "install gnuplot-nox (scripts/bootstrap.sh does)")
        return False
    blocks = {lib: [] for lib in CHART_LIBS}
    targets, ticks, labels, missing, names = [], [], [], [], []
    values = []
    x = 0.0
    prev_workload = None
    first_of_workload = 0.0
    nb = len(CHART_LIBS)
    for r in rows:
        if prev_workload is not None:
            x += 1.0 if r["workload"] == prev_workload else 2.2
        if r["workload"] != prev_workload:
            first_of_workload = x
        prev_workload = r["workload"]
        base = r["best_peer_median"]
        left = x
        top = r["target"]
        for i, lib in enumerate(CHART_LIBS):
            cx = x + i
            e = r["libs"][lib]
            if "median" in e:
                v, lo, hi = e["median"] / base, e["min"] / base, e["max"] / base
                blocks[lib].append(f"{cx:.2f} {v:.6g} {lo:.6g} {hi:.6g}")
                values += [lo, hi]
                top = max(top, hi)
            else:
                missing.append(f"{cx:.2f} \"{lib} n/a\"")
        right = x + nb - 1
        if "ratio" in r:
            labels.append(f"{(left + right) / 2:.2f} {top * 1.12:.6g} \"{r['ratio']:.2f}×\"")
        targets.append(f"{left - 0.5:.2f} {r['target']:g} {right - left + 1:.2f}")
        values.append(r["target"])
        ticks.append(f"{(left + right) / 2:.2f} \"{r['threads']} thread{'s' if r['threads'] > 1 else ''}\"")
        names.append((r["workload"], (first_of_workload + right) / 2))
        x = right + 1
    ymin = 2 ** math.floor(math.log2(min(values) / 1.15))
    ymax = 2 ** math.ceil(math.log2(max(values) * 1.7))
    # One tick label per workload, a line below the thread counts (the last centre wins).
    centres = {}
    for name, cx in names:
        centres[name] = cx
    workload_ticks = [f"{cx:.2f} \"\\n{name}\"" for name, cx in centres.items()]
    # gnuplot 5.4 crashes on a labels block whose only point is undefined: park a dummy off the chart.
    dummy = "-100 1 \"-\""
    nan = "NaN NaN NaN NaN"
    parts = [("\n".join(blocks[lib]) or nan) for lib in CHART_LIBS]
    parts += ["\n".join(targets), "\n".join(ticks), "\n".join(labels) or dummy,
              "\n".join(missing) or "-100 \"-\"", "\n".join(workload_ticks)]
    os.makedirs(os.path.dirname(data_path), exist_ok=True)
    with open(data_path, "w") as f:
        f.write("# x value min max (ratios to the best peer's median); blocks: "
                + ", ".join(CHART_LIBS) + ", targets, thread ticks, karx ratio labels, missing bars, workload ticks\n")
        f.write("\n\n\n".join(parts) + "\n")
    o = report["options"]
    command = report["command"] + ", " if len(report["command"]) <= 50 else ""
    subtitle = (f"{command}{report['date']}, {report['machine']['nproc']} CPUs, "
                f"{plural(o['rounds'], 'round')} × {plural(o['reps'], 'repetition')}"
                + "; bars: median, whiskers: min–max")
    subtitle = re.sub(r"([_^{}@&~\\])", r"\\\1", subtitle)  # literal in gnuplot's enhanced text
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    script = os.path.join(ROOT, "bench", "chart.gp")
    argv = [gnuplot, "-e", f"datafile={gp_string(data_path)}; outfile={gp_string(out_png)}; "
            f"ymin={ymin:g}; ymax={ymax:g}; xmax={x - 0.5:g}; subtitle={gp_string(subtitle)}", script]
    res = run_process(argv, 120)
    if not res.ok:
        problems.add("chart", res.error, res.detail)
        return False
    if res.stderr.strip():
        log("gnuplot: " + stderr_tail(res.stderr, 5))
    return True


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/run_all.py",
        description="Runs karx's runtime benchmarks beside oneTBB, Boost.Asio and Go, interleaved, "
                    "and reports the targets. Usually run through scripts/bench, which builds the "
                    "producers first.")
    ap.add_argument("--rounds", type=int, help="rounds per throughput workload (default 3)")
    ap.add_argument("--reps", type=int, help="repetitions per round and producer (default 5)")
    ap.add_argument("--min-time", type=float, dest="min_time",
                    help="minimum seconds per repetition, Google Benchmark and Go alike (default 0.2)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: --rounds 1 --reps 3 --min-time 0.05 (explicit options win)")
    ap.add_argument("--only", metavar="W,...",
                    help="only these workloads (the docs region then shows only these): "
                    + ", ".join(THROUGHPUT_NAMES + SYNC_NAMES + NET_NAMES + SPECIAL_NAMES)
                    + "; sync = the four karx.sync workloads; net = the three karx.net workloads")
    ap.add_argument("--no-docs", action="store_true",
                    help="do not rewrite docs/bench.md (the chart then goes beside the JSON)")
    ap.add_argument("--json", default=os.path.join(ROOT, "build", "release", "bench", "results.json"),
                    help="where to write all results (default build/release/bench/results.json)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is MISSED too")
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds before one producer process is killed (default 600)")
    bench_dir = os.path.join(ROOT, "build", "release", "bench")
    ap.add_argument("--runtime-bench", default=os.path.join(bench_dir, "karx_runtime_bench"),
                    help="the Google Benchmark binary (default build/release/bench/karx_runtime_bench)")
    ap.add_argument("--sync-bench", default=os.path.join(bench_dir, "karx_sync_bench"),
                    help="the karx.sync Google Benchmark binary (default build/release/bench/karx_sync_bench)")
    ap.add_argument("--go-peer", default=os.path.join(bench_dir, "karx-go-peer"),
                    help="the Go peer (default build/release/bench/karx-go-peer)")
    ap.add_argument("--probes", default=os.path.join(bench_dir, "probes", "karx_runtime_probes"),
                    help="the probes (default build/release/bench/probes/karx_runtime_probes)")
    ap.add_argument("--task-bench", default=os.path.join(bench_dir, "karx_task_bench"),
                    help="the task-layer benchmark (default build/release/bench/karx_task_bench)")
    ap.add_argument("--echo-client", default=os.path.join(bench_dir, "net", "karx_echo_client"),
                    help="the karx.net client (default build/release/bench/net/karx_echo_client)")
    ap.add_argument("--karx-echo-server", default=os.path.join(bench_dir, "net", "karx_echo_server"),
                    help="karx's echo server (default build/release/bench/net/karx_echo_server)")
    ap.add_argument("--asio-echo-server", default=os.path.join(bench_dir, "net", "karx_asio_echo_server"),
                    help="Boost.Asio's echo server (default build/release/bench/net/karx_asio_echo_server)")
    ap.add_argument("--net-duration", type=float, dest="net_duration",
                    help="seconds each echo run measures, after its warm-up (default 1; --quick 0.25)")
    ap.add_argument("--net-warmup", type=float, dest="net_warmup",
                    help="seconds of warm-up before each echo run measures (default 0.2; --quick 0.1)")
    ap.add_argument("--net-assign", dest="net_assign", choices=["blocks", "round-robin"], default="blocks",
                    help="how the echo client deals its connections to its threads (default blocks; "
                         "bench/net/echo_client.cpp says why)")
    ap.add_argument("--net-threads", type=int, dest="net_threads", default=NET_PROCESSORS,
                    help="threads of each echo server: karx processors, Asio threads, GOMAXPROCS "
                    f"(default {NET_PROCESSORS})")
    ap.add_argument("--bulk-bytes", type=int, dest="bulk_bytes",
                    help="bytes each bulk run pushes and reads back (default 1 GiB; --quick 128 MiB)")
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs", "bench.md"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    quick = {"rounds": 1, "reps": 3, "min_time": 0.05, "net_duration": 0.25, "net_warmup": 0.1,
             "bulk_bytes": 128 << 20}
    full = {"rounds": 3, "reps": 5, "min_time": 0.2, "net_duration": 1.0, "net_warmup": 0.2,
            "bulk_bytes": 1 << 30}
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.rounds < 1 or args.reps < 1 or args.min_time <= 0:
        ap.error("--rounds and --reps must be at least 1, --min-time positive")
    if args.net_duration <= 0 or args.net_warmup < 0 or args.bulk_bytes < 1 or args.net_threads < 1:
        ap.error("--net-duration must be positive, --net-warmup not negative, --bulk-bytes and --net-threads "
                 "at least 1")
    known = THROUGHPUT_NAMES + SYNC_NAMES + NET_NAMES + SPECIAL_NAMES
    if args.only:
        names = [w.strip() for w in args.only.split(",") if w.strip()]
        aliases = {"task": "task_layer", "task-layer": "task_layer"}
        names = [aliases.get(w, w) for w in names]
        groups = {"sync": SYNC_NAMES, "net": NET_NAMES}
        names = [x for w in names for x in groups.get(w, [w])]
        bad = [w for w in names if w not in known]
        if bad:
            ap.error(f"--only: unknown workload(s) {', '.join(bad)}; known: {', '.join(known)}")
        args.selected = [w for w in known if w in names]
    else:
        args.selected = known
    for k in ("runtime_bench", "sync_bench", "go_peer", "probes", "task_bench", "echo_client", "karx_echo_server",
              "asio_echo_server", "json", "docs"):
        setattr(args, k, os.path.abspath(getattr(args, k)))
    return args


def main(argv=None) -> int:
    try:
        sys.stdout.reconfigure(encoding="utf-8")
        sys.stderr.reconfigure(encoding="utf-8")
    except (AttributeError, ValueError):
        pass
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    entry = os.environ.get("KARX_BENCH_ENTRY")
    command = shlex.join([entry, *argv]) if entry else shlex.join(["python3", "bench/run_all.py", *argv])
    started = time.monotonic()
    problems = Problems()
    report = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "date_iso": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "options": {"rounds": args.rounds, "reps": args.reps, "min_time": args.min_time, "quick": args.quick,
                    "only": args.selected, "timeout": args.timeout, "net_duration": args.net_duration,
                    "net_warmup": args.net_warmup, "bulk_bytes": args.bulk_bytes, "net_threads": args.net_threads,
                    "net_assign": args.net_assign},
        "producers": {"runtime_bench": rel(args.runtime_bench), "sync_bench": rel(args.sync_bench),
                      "go_peer": rel(args.go_peer),
                      "probes": rel(args.probes), "task_bench": rel(args.task_bench),
                      "echo_client": rel(args.echo_client), "karx_echo_server": rel(args.karx_echo_server),
                      "asio_echo_server": rel(args.asio_echo_server)},
        "machine": machine_info(),
        "load_average_start": list(os.getloadavg()),
        "json_rel": rel(args.json),
    }
    log(f"{command}: {plural(args.rounds, 'round')} × {plural(args.reps, 'repetition')}, min time {args.min_time:g} s; "
        f"workloads: {', '.join(args.selected)}")

    workloads = [w for w in THROUGHPUT_NAMES if w in args.selected]
    sync_workloads = [w for w in SYNC_NAMES if w in args.selected]
    tp = Throughput(args, problems)
    if workloads or sync_workloads:
        tp.run(workloads + sync_workloads)
    if workloads:
        report["throughput"] = tp.rows(workloads)
    if sync_workloads:
        report["sync"] = tp.sync_rows(sync_workloads)

    net_workloads = [w for w in NET_NAMES if w in args.selected]
    net = Net(args, problems)
    if net_workloads:
        net.run(net_workloads)
        report["net"] = net.rows(net_workloads)

    sections = [s for s in PROBE_SECTIONS if s in args.selected]
    probe_runs = []
    if sections:
        probes, probe_runs = run_probes(args, sections, problems)
        if "blocking" in sections:
            evaluate_blocking(probes["blocking"])
            report["blocking"] = probes["blocking"]
        if "blocked_or_busy" in sections:
            evaluate_blocked_or_busy(probes["blocked_or_busy"])
            report["blocked_or_busy"] = probes["blocked_or_busy"]
        if "idle" in sections:
            evaluate_idle(probes["idle"])
            report["idle"] = probes["idle"]
        if "memory" in sections:
            evaluate_memory(probes["memory"])
            report["memory"] = probes["memory"]
        if "forkjoin_memory" in sections:
            evaluate_forkjoin_memory(probes["forkjoin_memory"])
            report["forkjoin_memory"] = probes["forkjoin_memory"]
    if "task_layer" in args.selected:
        report["task_layer"] = run_task_layer(args, problems)

    report["load_average_end"] = list(os.getloadavg())
    report["seconds"] = round(time.monotonic() - started, 1)
    report["problems"] = problems.items
    report["raw"] = {"karx_runtime_bench_context": tp.gbench_context.get("karx_runtime_bench"),
                     "karx_sync_bench_context": tp.gbench_context.get("karx_sync_bench"),
                     "karx_runtime_bench": tp.raw_gbench,
                     "go_peer": tp.raw_go,
                     "net": [{"workload": w, "library": lib, **o} for (w, lib), objs in net.samples.items() for o in objs],
                     "runs": tp.runs + net.runs + probe_runs}
    checks = all_checks(report)
    report["targets"] = [{"area": a, "target": t, "status": s} for a, t, s in checks]

    tables = build_tables(report)
    chart_png = (os.path.join(os.path.dirname(args.docs), "bench-runtime.png") if not args.no_docs
                 else os.path.join(os.path.dirname(args.json), "bench-runtime.png"))
    drawn = False
    if "throughput" in report:
        drawn = draw_chart(report, chart_png, os.path.join(os.path.dirname(args.json), "chart.dat"), problems)
    report["chart"] = rel(chart_png) if drawn else None

    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1, ensure_ascii=False)
        f.write("\n")

    if not args.no_docs:
        chart_rel = os.path.relpath(chart_png, os.path.dirname(args.docs)) if drawn else None
        write_docs(args.docs, docs_region(report, tables, chart_rel))

    # The report.
    print()
    print(f"{command}  ({report['date']}, {report['seconds']:.0f} s)")
    print(f"machine: {machine_line(report)}")
    for t in tables:
        print()
        print(t.text())
    met = sum(1 for c in checks if c[2] == "met")
    missed = [c for c in checks if c[2] == "MISSED"]
    unknown = [c for c in checks if c[2] == "missing"]
    print()
    print(f"targets: {met} met, {len(missed)} MISSED, {len(unknown)} missing data (of {len(checks)})")
    print(f"results: {rel(args.json)}" + (f"; docs: {rel(args.docs)}" if not args.no_docs else "")
          + (f"; chart: {rel(chart_png)}" if drawn else ""))
    if problems.items:
        print()
        print("PROBLEMS (producers missing or failed; their cells say missing):")
        for p in problems.items:
            times = f" ×{p['count']}" if p["count"] > 1 else ""
            print(f"  !! {p['what']}: {p['reason']}{times}" + (f" — {p['detail']}" if p["detail"] else ""))
        return 1
    if args.strict and missed:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
