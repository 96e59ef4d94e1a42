#!/usr/bin/env python3
"""Builds the echo probe and runs interleaved measurements; prints a Markdown table.

For each round, for each workload, each server in turn (A B C A B C ...): start the server,
run the client against it, stop the server. Reports the median and the range over rounds,
the server's CPU time (user + system, from its rusage) per round trip or per MiB, and the
load average before and after each round.

  run.py [--rounds N] [--secs S] [--warmup S] [--bulk-mib M] [--cxx CXX] [--build DIR]
"""
import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

SERVERS = [
    ("epoll", ["epoll_echo"]),
    ("uring", ["uring_echo", "{port}", "ring"]),
    ("uring-poll", ["uring_echo", "{port}", "poll"]),
]


def pick_cxx(cxx):
    if cxx:
        return cxx
    for c in ("clang++-19", "clang++", "g++"):
        if shutil.which(c):
            return c
    sys.exit("no C++ compiler found")


def build(cxx, out):
    os.makedirs(out, exist_ok=True)
    flags = ["-O2", "-std=c++20", "-Wall", "-Wextra"]
    for name, libs in (("epoll_echo", []), ("uring_echo", ["-luring"]), ("client", [])):
        subprocess.run([cxx, *flags, "-o", os.path.join(out, name),
                        os.path.join(HERE, name + ".cpp"), *libs], check=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def run_one(out, server, client_args):
    port = free_port()
    argv = [os.path.join(out, server[0])] + [a.format(port=port) for a in server[1:]]
    if len(argv) == 1:
        argv.append(str(port))
    srv = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        res = subprocess.run([os.path.join(out, "client"), str(port), *client_args],
                             capture_output=True, text=True, timeout=120)
    finally:
        srv.terminate()
        _, _, ru = os.wait4(srv.pid, 0)
    if res.returncode != 0:
        raise RuntimeError(f"client failed: {res.stderr.strip()}")
    m = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", res.stdout)}
    # Server CPU (user + system) over its whole life, per round trip or per MiB echoed.
    cpu = ru.ru_utime + ru.ru_stime
    if "rps" in m:
        m["cpu_us"] = cpu / m["total"] * 1e6
    else:
        m["cpu_ms_mib"] = cpu / (m["total"] / 2**20) * 1e3
    return m


def fmt(vals, digits):
    med = statistics.median(vals)
    return f"{med:.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--bulk-mib", type=int, default=256)
    ap.add_argument("--cxx")
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "uring_probe"))
    args = ap.parse_args()

    build(pick_cxx(args.cxx), args.build)
    workloads = [
        ("1 conn", ["rr", "1", str(args.secs), str(args.warmup)]),
        ("64 conns", ["rr", "64", str(args.secs), str(args.warmup)]),
        ("bulk", ["bulk", str(args.bulk_mib)]),
    ]
    results = {}  # (workload, server) -> list of dicts
    loads = [loadavg()]
    print(f"cores: {os.cpu_count()}, kernel {os.uname().release}, load before: {loads[0]}", flush=True)
    for r in range(args.rounds):
        for wname, cargs in workloads:
            for sname, server in SERVERS:
                m = run_one(args.build, server, cargs)
                results.setdefault((wname, sname), []).append(m)
                print(f"round {r + 1} {wname:8} {sname:10} {m}", flush=True)
        loads.append(loadavg())
    print(f"\nload average (1 min) before and after each round: {' '.join(loads)}\n")

    print(f"Median (min–max) of {args.rounds} interleaved rounds.\n")
    print("| workload | server | requests/s | p50 µs | p99 µs | server CPU µs/request |")
    print("|---|---|---|---|---|---|")
    for wname, _ in workloads[:2]:
        for sname, _ in SERVERS:
            ms = results[(wname, sname)]
            print(f"| {wname} | {sname} | {fmt([m['rps'] for m in ms], 0)} "
                  f"| {fmt([m['p50_us'] for m in ms], 1)} | {fmt([m['p99_us'] for m in ms], 1)} "
                  f"| {fmt([m['cpu_us'] for m in ms], 2)} |")
    print(f"\n| workload | server | GB/s | server CPU ms/MiB |\n|---|---|---|---|")
    for sname, _ in SERVERS:
        ms = results[("bulk", sname)]
        print(f"| bulk {args.bulk_mib} MiB, 1 conn | {sname} | {fmt([m['gbps'] for m in ms], 2)} "
              f"| {fmt([m['cpu_ms_mib'] for m in ms], 3)} |")


if __name__ == "__main__":
    main()
