#!/usr/bin/env python3
"""Exact instructions and atomic RMWs per operation of Google Benchmark benchmarks (callgrind).

Method (differential, so set-up and first-iteration costs cancel):
  * Each benchmark runs twice under `valgrind --tool=callgrind`:
      long run:  --benchmark_min_time=T --v=2. Google Benchmark (1.7.1) then logs every run it
                 makes ("Running <name> for <n>"): k runs of 1, 10, 100, ... iterations, each a
                 fresh call of the benchmark function (its set-up is done k times);
      short run: --benchmark_min_time=0 --benchmark_repetitions=k: k runs of exactly 1 iteration.
  * Only the timed loop (`for (auto _ : state)`) is counted: callgrind dumps a profile part on
    entry to benchmark::State::StartKeepRunning and on exit from State::FinishKeepRunning
    (--dump-before/--dump-after with the mangled names, found with nm). The parts dumped on exit
    hold what all threads executed inside each timed loop (--separate-threads=no); they are
    summed. The library's own work (run loop, logging, reporting) is left out.
  * per op = (cost_long - cost_short) / (ops_long - ops_short),
    ops = iterations x ops per iteration (--ops-per-iter, else the benchmark's JSON counter `ops`
    set by set_ops() in bench/runtime/workloads.hpp, else 1).
  * Instructions = callgrind's Ir. Atomic RMWs = executions of lock-prefixed instructions and of
    xchg with a memory operand (implicitly locked), x86-64 only: with --dump-instr=yes callgrind
    gives each instruction's object (ob=) and ELF address; every object is disassembled with
    `objdump -d` and the self cost of its locked instructions is summed. The compressed dump
    format is parsed: name compression "(id) name", relative positions +N/-N/*, and the cost line
    after calls= (the callee's inclusive cost, not the instruction's own) is skipped. The parsed
    Ir total of each part is checked against callgrind's totals: line.
Work a benchmark leaves running after its loop ends is neither timed nor counted. Valgrind runs
one thread at a time, so multi-threaded workloads are exact for the interleaving valgrind
produces; when the cost per iteration differs between runs, a note says so.

Usage: bench/callgrind_ops.py BINARY FILTER [FILTER...] [--ops-per-iter N] [--min-time T]
                              [--top N] [--json] [-v]
  FILTER: a full benchmark name, a name without its tail (karx_chained_spawn/1 for
  karx_chained_spawn/1/real_time), or a regex matching exactly one benchmark.
Example: bench/callgrind_ops.py build/bench/karx_runtime_bench karx_chained_spawn/1 --min-time 2
  -> karx_chained_spawn/1: 509.9 instructions/op, 6.05 locked RMWs/op (ops: 4000→1510000)
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict

PROG = "callgrind_ops"
HOOKS = {  # fallback if nm finds nothing (Itanium mangling of the two State members)
    "start": "_ZN9benchmark5State16StartKeepRunningEv",
    "finish": "_ZN9benchmark5State17FinishKeepRunningEv",
}
RUN_LOG = re.compile(r"^-- LOG\(2\): Running (.+) for (\d+)\s*$", re.M)


class Fail(Exception):
    pass


def warn(msg):
    print(f"{PROG}: warning: {msg}", file=sys.stderr)


# ------------------------------------------------------------------------------------------
# symbols of the timed region


def _nm_symbols(path):
    names = set()
    for extra in ([], ["-D"]):
        p = subprocess.run(["nm"] + extra + [path], capture_output=True, text=True,
                           errors="replace")
        for line in p.stdout.splitlines():
            parts = line.split()
            if parts:
                names.add(parts[-1].split("@")[0])
    return names


def hook_symbols(binary):
    """Mangled names of State::StartKeepRunning / FinishKeepRunning, from nm of the binary
    (defined or referenced) or of the libbenchmark it is linked against."""
    candidates = [binary]
    p = subprocess.run(["ldd", binary], capture_output=True, text=True, errors="replace")
    for m in re.finditer(r"=>\s*(\S*benchmark\S*)", p.stdout):
        candidates.append(m.group(1))
    found = {}
    for path in candidates:
        syms = _nm_symbols(path)
        for key, pat in (("start", r"_ZN9benchmark5State\d+StartKeepRunningE\S*"),
                         ("finish", r"_ZN9benchmark5State\d+FinishKeepRunningE\S*")):
            hits = sorted(s for s in syms if re.fullmatch(pat, s))
            if hits and key not in found:
                found[key] = hits[0]
        if len(found) == 2:
            return found
    warn("nm found no benchmark::State::Start/FinishKeepRunning symbols; using "
         + ", ".join(HOOKS.values()))
    return dict(HOOKS)


# ------------------------------------------------------------------------------------------
# callgrind dump parsing

_NAME_KIND = {"ob": "ob", "cob": "ob",
              "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl", "jfi": "fl",
              "fn": "fn", "cfn": "fn", "jfn": "fn"}
_COMPRESSED = re.compile(r"\((\d+)\)(?:\s+(.*))?$")


class Part:
    """One callgrind dump file: self Ir per (object, function, instruction address)."""

    def __init__(self, path):
        self.path = path
        self.trigger = None
        self.cost = defaultdict(int)  # (obj, fn, addr) -> self Ir
        self.ir = 0
        self.totals = self.summary = None
        self._parse()

    def _parse(self):
        names = {"ob": {}, "fl": {}, "fn": {}}

        def name(kind, value):
            m = _COMPRESSED.match(value.strip())
            if not m:
                return value.strip()
            if m.group(2) is not None:  # "(id) name" defines id
                names[kind][m.group(1)] = m.group(2)
                return m.group(2)
            return names[kind].get(m.group(1), f"({m.group(1)})")  # "(id)" refers to it

        n_pos, ir_index, instr_index = 1, 0, None
        last = [0]          # position of the last self-cost line (what +N/-N/* refer to)
        skip = False        # next position line is a call's inclusive cost / a jump source
        obj = fn = None
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line or line[0] == "#":
                    continue
                c = line[0]
                if c.isdigit() or c in "+-*":
                    if skip:            # callgrind writes these relative to `last`
                        skip = False    # without moving it
                        continue
                    tokens = line.split()
                    pos = []
                    for i in range(n_pos):
                        t = tokens[i]
                        if t == "*":
                            pos.append(last[i])
                        elif t[0] in "+-":
                            pos.append(last[i] + int(t, 10))
                        else:
                            pos.append(int(t, 0))
                    last = pos
                    costs = tokens[n_pos:]
                    ir = int(costs[ir_index]) if len(costs) > ir_index else 0
                    if ir:
                        self.cost[(obj, fn, pos[instr_index])] += ir
                        self.ir += ir
                    continue
                key, eq, value = line.partition("=")
                if eq and key in _NAME_KIND:
                    v = name(_NAME_KIND[key], value)
                    if key == "ob":
                        obj = v
                    elif key == "fn":
                        fn = v
                    continue
                if eq and key in ("calls", "jump", "jcnd"):
                    skip = True
                    continue
                if line.startswith("positions:"):
                    kinds = line.split()[1:]
                    if "instr" not in kinds:
                        raise Fail(f"{self.path}: no instruction positions "
                                   "(--dump-instr=yes missing?)")
                    n_pos, instr_index = len(kinds), kinds.index("instr")
                    last = [0] * n_pos
                elif line.startswith("events:"):
                    ir_index = line.split()[1:].index("Ir")
                elif line.startswith("summary:"):
                    self.summary = int(line.split()[1 + ir_index])
                elif line.startswith("totals:"):
                    self.totals = int(line.split()[1 + ir_index])
                elif line.startswith("desc: Trigger:"):
                    self.trigger = line.split(":", 2)[2].strip()
        if self.totals is not None and self.totals != self.ir:
            warn(f"{self.path}: parsed Ir {self.ir} != callgrind totals {self.totals}")
        if self.summary is not None and self.summary != self.ir:
            warn(f"{self.path}: parsed Ir {self.ir} != callgrind summary {self.summary}")


# ------------------------------------------------------------------------------------------
# disassembly: which addresses hold atomic read-modify-writes

_PREFIXES = ("rex", "data16", "data32", "addr16", "addr32", "cs", "ds", "es", "ss", "fs", "gs",
             "notrack", "bnd", "xacquire", "xrelease", "rep", "repz", "repe", "repnz", "repne")
_INSN = re.compile(r"^\s*([0-9a-f]+):\t(.*)$")
_disasm = {}


def disassemble(obj):
    """(instruction start addresses, addresses of locked RMWs) of an ELF object."""
    if obj in _disasm:
        return _disasm[obj]
    starts, locked = set(), set()
    if obj and os.path.isfile(obj):
        out = subprocess.run(["objdump", "-d", "-w", "--no-show-raw-insn", obj],
                             capture_output=True, text=True, errors="replace").stdout
        for line in out.splitlines():
            m = _INSN.match(line)
            if not m:
                continue
            addr = int(m.group(1), 16)
            starts.add(addr)
            text = m.group(2).split("#", 1)[0].split("<", 1)[0]
            tokens = text.split()
            if "lock" in tokens:
                locked.add(addr)
                continue
            i = 0
            while i < len(tokens) and tokens[i].startswith(_PREFIXES) and "(" not in tokens[i] \
                    and "," not in tokens[i]:
                i += 1
            if i < len(tokens) and tokens[i].startswith("xchg") and "(" in "".join(tokens[i + 1:]):
                locked.add(addr)
    _disasm[obj] = (starts, locked)
    return starts, locked


def part_costs(part):
    """Ir, RMWs, {(obj, fn): [Ir, RMWs]}, Ir at addresses objdump does not list."""
    rmw = unmatched = 0
    by_fn = defaultdict(lambda: [0, 0])
    for (obj, fn, addr), ir in part.cost.items():
        starts, locked = disassemble(obj)
        row = by_fn[(obj, fn)]
        row[0] += ir
        if addr in locked:
            rmw += ir
            row[1] += ir
        elif addr not in starts:
            unmatched += ir
    return part.ir, rmw, by_fn, unmatched


# ------------------------------------------------------------------------------------------
# running


def run_callgrind(args, binary, hooks, bench_args, tag, workdir):
    """Runs the binary under callgrind; returns the logged runs [(name, iterations)], the
    JSON report and the Parts of the timed regions (one per run)."""
    out = os.path.join(workdir, tag + ".cg")
    js = os.path.join(workdir, tag + ".json")
    cmd = ([args.valgrind, "--tool=callgrind", "--dump-instr=yes", "--separate-threads=no",
            "--demangle=no", f"--callgrind-out-file={out}",
            f"--dump-before={hooks['start']}", f"--dump-after={hooks['finish']}"]
           + args.valgrind_arg
           + [binary, "--v=2", f"--benchmark_out={js}", "--benchmark_out_format=json"]
           + bench_args)
    if args.verbose:
        print("+ " + " ".join(cmd), file=sys.stderr)
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-2000:] + p.stderr[-3000:])
        raise Fail(f"{tag} run failed (exit {p.returncode})")
    runs = [(m.group(1), int(m.group(2))) for m in RUN_LOG.finditer(p.stderr + "\n" + p.stdout)]
    try:
        with open(js) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        raise Fail(f"{tag} run: no JSON report ({e})")
    files = sorted((f for f in os.listdir(workdir) if re.fullmatch(re.escape(tag) + r"\.cg\.\d+", f)),
                   key=lambda f: int(f.rsplit(".", 1)[1]))
    parts = [Part(os.path.join(workdir, f)) for f in files]
    triggers = ["before" if (q.trigger or "").startswith("--dump-before") else
                "after" if (q.trigger or "").startswith("--dump-after") else "?" for q in parts]
    if triggers != ["before", "after"] * len(runs):
        raise Fail(f"{tag} run: {len(runs)} runs logged but callgrind dumped {len(parts)} parts "
                   f"({' '.join(triggers[:12])}...)")
    return runs, report, [q for q, t in zip(parts, triggers) if t == "after"]


def list_benchmarks(binary, bench_args):
    p = subprocess.run([binary, "--benchmark_list_tests"] + bench_args,
                       capture_output=True, text=True, errors="replace")
    if p.returncode != 0:
        raise Fail(f"{binary} --benchmark_list_tests failed:\n{p.stderr}")
    return [line.strip() for line in p.stdout.splitlines() if line.strip()]


def resolve(filt, names):
    """The one benchmark FILTER names: itself, FILTER/<tail>, or the only regex match."""
    def regex_matches():
        try:
            return [n for n in names if re.search(filt, n)]
        except re.error:
            return []
    for candidates in ([n for n in names if n == filt],
                       [n for n in names if n.startswith(filt + "/")],
                       None):
        if candidates is None:
            candidates = regex_matches()
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise Fail(f"{filt!r} is ambiguous: {', '.join(candidates[:8])}"
                       + (", ..." if len(candidates) > 8 else ""))
    raise Fail(f"no benchmark matches {filt!r}")


def iteration_entries(report, full):
    return [b for b in report.get("benchmarks", [])
            if b.get("run_type", "iteration") == "iteration" and b.get("name") == full]


def measure(args, filt, full, binary, hooks, workdir):
    anchored = "^" + re.sub(r"([.\[\](){}*+?|^$\\])", r"\\\1", full) + "$"
    base = [f"--benchmark_filter={anchored}"] + args.bench_arg
    min_time = args.min_time
    for attempt in range(3):
        runs_l, rep_l, parts_l = run_callgrind(
            args, binary, hooks, base + [f"--benchmark_min_time={min_time:g}"],
            f"long{attempt}", workdir)
        if {n for n, _ in runs_l} != {full}:
            raise Fail(f"filter {anchored} ran {sorted({n for n, _ in runs_l}) or 'nothing'}")
        if sum(n for _, n in runs_l) > len(runs_l):
            break
        min_time *= 5  # a single 1-iteration run already took min_time
    else:
        raise Fail("the long run never made more than one iteration")
    k = len(runs_l)
    runs_s, rep_s, parts_s = run_callgrind(
        args, binary, hooks, base + ["--benchmark_min_time=0", f"--benchmark_repetitions={k}"],
        "short", workdir)
    if [n for _, n in runs_s] != [1] * k:
        raise Fail(f"the short run did not make {k} runs of 1 iteration: {runs_s}")

    ent_l, ent_s = iteration_entries(rep_l, full), iteration_entries(rep_s, full)
    if not ent_l or not ent_s:
        raise Fail("benchmark missing from the JSON report")
    if int(ent_l[-1].get("iterations", -1)) != runs_l[-1][1]:
        raise Fail(f"JSON reports {ent_l[-1].get('iterations')} iterations, log says "
                   f"{runs_l[-1][1]}")
    if int(ent_l[-1].get("threads", 1)) != 1:
        raise Fail("benchmarks with ->Threads(n > 1) are not supported")
    if args.ops_per_iter is not None:
        per_iter, source = args.ops_per_iter, "--ops-per-iter"
    elif "ops" in ent_l[-1]:
        per_iter, source = float(ent_l[-1]["ops"]), "counter ops"
        other = {float(e.get("ops", per_iter)) for e in ent_s}
        if other != {per_iter}:
            warn(f"{filt}: ops counter differs between runs ({per_iter} vs {sorted(other)})")
    else:
        per_iter, source = 1.0, "default 1"
    iters_l, iters_s = sum(n for _, n in runs_l), sum(n for _, n in runs_s)
    ops_l, ops_s = iters_l * per_iter, iters_s * per_iter
    d_ops = ops_l - ops_s

    def total(parts):
        per_run, by_fn, unmatched = [], defaultdict(lambda: [0, 0]), 0
        for q in parts:
            ir, rmw, fns, un = part_costs(q)
            per_run.append((ir, rmw))
            unmatched += un
            for key, (i, r) in fns.items():
                by_fn[key][0] += i
                by_fn[key][1] += r
        return per_run, sum(x[0] for x in per_run), sum(x[1] for x in per_run), by_fn, unmatched

    pr_l, ir_l, rmw_l, fn_l, un_l = total(parts_l)
    pr_s, ir_s, rmw_s, fn_s, un_s = total(parts_s)
    res = {
        "name": filt, "benchmark": full,
        "instructions_per_op": (ir_l - ir_s) / d_ops, "rmws_per_op": (rmw_l - rmw_s) / d_ops,
        "ops_short": ops_s, "ops_long": ops_l, "ops_per_iteration": per_iter,
        "ops_source": source, "runs": k, "iterations_short": iters_s, "iterations_long": iters_l,
        "instructions_short": ir_s, "instructions_long": ir_l,
        "rmws_short": rmw_s, "rmws_long": rmw_l, "min_time": min_time,
        "per_run_long": [[n, i, r] for (_, n), (i, r) in zip(runs_l, pr_l)],
        "per_run_short": [[n, i, r] for (_, n), (i, r) in zip(runs_s, pr_s)],
    }
    if max(un_l, un_s) > 0.001 * max(ir_l - ir_s, 1):
        warn(f"{filt}: {max(un_l, un_s)} Ir at addresses objdump does not list as instructions "
             "(RMWs there are not counted)")
    if k >= 3:  # cross-check from the long run alone: its last two runs
        (n1, i1, r1), (n2, i2, r2) = res["per_run_long"][-2:]
        d = (n2 - n1) * per_iter
        res["check_instructions_per_op"], res["check_rmws_per_op"] = (i2 - i1) / d, (r2 - r1) / d
    if args.top:
        rows = []
        for key in set(fn_l) | set(fn_s):
            a, b = fn_l.get(key, [0, 0]), fn_s.get(key, [0, 0])
            rows.append({"function": key[1], "object": key[0],
                         "instructions_per_op": (a[0] - b[0]) / d_ops,
                         "rmws_per_op": (a[1] - b[1]) / d_ops})
        by_ir = sorted(rows, key=lambda r: -abs(r["instructions_per_op"]))[:args.top]
        by_rmw = sorted((r for r in rows if r["rmws_per_op"]),
                        key=lambda r: -abs(r["rmws_per_op"]))[:args.top]
        nice = demangle({r["function"] for r in by_ir + by_rmw})
        for r in by_ir + by_rmw:
            r["function"] = nice.get(r["function"], r["function"])
        res["top_instructions"], res["top_rmws"] = by_ir, by_rmw
    return res


def demangle(names):
    """{valgrind name: demangled} via c++filt ("'N" recursion suffix and @version kept off)."""
    names = [n for n in names if n]
    if not names or not shutil.which("c++filt"):
        return {}
    bare = [re.sub(r"('\d+)$", "", n).split("@")[0] for n in names]
    out = subprocess.run(["c++filt"], input="\n".join(bare) + "\n", capture_output=True,
                         text=True).stdout.splitlines()
    if len(out) != len(names):
        return {}
    return {n: o + (re.search(r"'\d+$", n).group(0) if re.search(r"'\d+$", n) else "")
            for n, o in zip(names, out)}


def fmt_num(x):
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def print_result(res, verbose):
    print(f"{res['name']}: {res['instructions_per_op']:.1f} instructions/op, "
          f"{res['rmws_per_op']:.2f} locked RMWs/op "
          f"(ops: {fmt_num(res['ops_short'])}\u2192{fmt_num(res['ops_long'])})", flush=True)
    if "check_instructions_per_op" in res:
        ci, cr = res["check_instructions_per_op"], res["check_rmws_per_op"]
        if abs(ci - res["instructions_per_op"]) > 0.01 * abs(res["instructions_per_op"]) \
                or abs(cr - res["rmws_per_op"]) > 0.05:
            print(f"  note: scheduling-dependent (cost per iteration differs between runs); the "
                  f"last two long runs alone give {ci:.1f} instructions/op, {cr:.2f} RMWs/op")
    if verbose:
        print(f"  {res['benchmark']}: {res['runs']} runs, iterations "
              f"{res['iterations_short']}\u2192{res['iterations_long']}, ops/iteration "
              f"{fmt_num(res['ops_per_iteration'])} ({res['ops_source']}); instructions "
              f"{res['instructions_short']}\u2192{res['instructions_long']}, RMWs "
              f"{res['rmws_short']}\u2192{res['rmws_long']}")
        for tag in ("short", "long"):
            print(f"  {tag} run, per run [iterations, instructions, RMWs]: "
                  f"{res['per_run_' + tag]}")
    for title, key in (("instructions", "top_instructions"), ("locked RMWs", "top_rmws")):
        if res.get(key):
            print(f"  top by {title} (per op: instructions, RMWs, function [object]):")
            for r in res[key]:
                print(f"    {r['instructions_per_op']:10.2f} {r['rmws_per_op']:7.3f}  "
                      f"{r['function']}  [{os.path.basename(r['object'] or '?')}]")


def main():
    ap = argparse.ArgumentParser(
        description="Exact instructions and atomic RMWs (lock prefix, xchg with memory) per "
                    "operation of Google Benchmark benchmarks, by differential callgrind runs.")
    ap.add_argument("binary", help="Google Benchmark executable")
    ap.add_argument("filters", nargs="+", metavar="FILTER",
                    help="one benchmark each: full name, name without a tail like /real_time, "
                         "or a regex matching exactly one benchmark")
    ap.add_argument("--ops-per-iter", type=float,
                    help="operations per iteration (default: the JSON counter `ops`, else 1)")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="--benchmark_min_time of the long run, seconds as measured under "
                         "valgrind (default 1)")
    ap.add_argument("--top", type=int, default=0, metavar="N",
                    help="also list the N functions contributing most instructions / RMWs per op")
    ap.add_argument("--json", action="store_true", help="print a JSON list of results")
    ap.add_argument("--bench-arg", action="append", default=[],
                    help="extra argument for the benchmark binary (repeatable)")
    ap.add_argument("--valgrind-arg", action="append", default=[],
                    help="extra argument for valgrind (repeatable)")
    ap.add_argument("--valgrind", default="valgrind", help=argparse.SUPPRESS)
    ap.add_argument("--keep", action="store_true", help="keep the callgrind dumps")
    ap.add_argument("-v", "--verbose", action="store_true", help="per-run costs, commands")
    args = ap.parse_args()
    for tool in (args.valgrind, "objdump", "nm"):
        if not shutil.which(tool):
            sys.exit(f"{PROG}: {tool} not found")
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"{PROG}: {args.binary} is not an executable")

    try:
        names = list_benchmarks(binary, args.bench_arg)
        hooks = hook_symbols(binary)
    except Fail as e:
        sys.exit(f"{PROG}: {e}")
    results, status = [], 0
    for filt in args.filters:
        workdir = tempfile.mkdtemp(prefix="callgrind_ops.")
        try:
            res = measure(args, filt, resolve(filt, names), binary, hooks, workdir)
        except Fail as e:
            print(f"{PROG}: {filt}: {e}", file=sys.stderr)
            status = 1
            continue
        finally:
            if args.keep:
                print(f"{PROG}: dumps kept in {workdir}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        results.append(res)
        if not args.json:
            print_result(res, args.verbose)
    if args.json:
        print("[" + ",\n ".join(json.dumps(r) for r in results) + "]")
    return status


if __name__ == "__main__":
    sys.exit(main())
