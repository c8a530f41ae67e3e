#!/usr/bin/env python3
"""Reads wrk --latency outputs and prints the comparison table of bench/gateway.sh.

Each file may end with a `cpu_ticks TICKS CLK_TCK` line (CPU the server under test used during
the run); the table then shows CPU microseconds per request.

Usage: report.py LABEL=FILE ... ; labels are 'direct', 'nginx', 'signpost', 'traced', 'old'
and 'traced_old' (the baseline binary's gateways) with an optional '#round' suffix. With several rounds, each column of the table is that figure's median
over the target's rounds (req/s, p50, p99 and CPU each on their own: one round's p99 swings by
10-20 % on a shared machine, so it is not taken from the round with the median req/s), and every
round is listed below it.
"""
import re
import statistics
import sys

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        lat[pct] = float(m.group(1)) * UNITS[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    cpu = re.search(r"^cpu_ticks (\d+) (\d+)$", text, re.M)
    cpu_us = int(cpu.group(1)) / int(cpu.group(2)) * 1e6 / requests if cpu else float("nan")
    socket = re.search(r"Socket errors:.*", text)
    return {
        "rps": rps,
        "p50": lat["50"],
        "p99": lat["99"],
        "cpu_us": cpu_us,
        "non2xx": int(errors.group(1)) if errors else 0,
        "socket": socket.group(0) if socket else "",
    }


runs = {}
for arg in sys.argv[1:]:
    label, path = arg.split("=", 1)
    target = label.split("#")[0]
    runs.setdefault(target, []).append(parse(path))


def median_run(rs):
    """Each figure's median over the rounds (the lower middle one for an even count)."""
    def med(key):
        ordered = sorted(r[key] for r in rs)
        return ordered[(len(ordered) - 1) // 2]

    return {key: med(key) for key in ("rps", "p50", "p99", "cpu_us")}


names = {
    "direct": "backend direct",
    "nginx": "nginx proxy",
    "signpost": "signpost gateway",
    "traced": "gateway, traced",
    "old": "baseline gateway",
    "traced_old": "baseline, traced",
}
ORDER = ("direct", "nginx", "old", "signpost", "traced_old", "traced")
rows = {t: median_run(rs) for t, rs in runs.items()}
nginx = rows.get("nginx")
print(f"{'target':<18} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11} {'req/s vs nginx':>15} {'p99 vs nginx':>13}")
for t in ORDER:
    if t not in rows:
        continue
    r = rows[t]
    vs = f"{r['rps'] / nginx['rps']:.2f}x" if nginx else "-"
    p99 = f"{r['p99'] / nginx['p99']:.2f}x" if nginx else "-"
    print(f"{names[t]:<18} {r['rps']:>10.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['cpu_us']:>11.1f} {vs:>15} {p99:>13}")
if any(len(rs) > 1 for rs in runs.values()):
    print("\nevery round (req/s, p50 ms, p99 ms, CPU us/req):")
    for t in ORDER:
        for i, r in enumerate(runs.get(t, []), 1):
            print(f"  {names[t]:<18} round {i}: {r['rps']:>10.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['cpu_us']:>8.1f}")
if "traced" in rows and "signpost" in rows:
    cost = 1 - rows["traced"]["rps"] / rows["signpost"]["rps"]
    print(f"\ntracing on, not sampled: {rows['traced']['rps'] / rows['signpost']['rps']:.3f}x the "
          f"plain gateway's req/s ({cost * 100:+.1f} % cost)")


def paired(new, old):
    """New/old ratios of req/s, p99 and CPU per request: the median of the per-round ratios
    (each round measures both back to back, so the load of that moment cancels out)."""
    pairs = list(zip(runs[new], runs[old]))
    out = {}
    for key in ("rps", "p99", "cpu_us"):
        out[key] = statistics.median(n[key] / o[key] for n, o in pairs)
    return out, pairs


for new, old in (("signpost", "old"), ("traced", "traced_old")):
    if new in runs and old in runs:
        ratio, pairs = paired(new, old)
        print(f"\n{names[new]} new/old (median of {len(pairs)} paired rounds): req/s "
              f"{ratio['rps']:.3f}x, p99 {ratio['p99']:.3f}x, CPU per request {ratio['cpu_us']:.3f}x")
        print("  per round req/s: " + " ".join(f"{n['rps'] / o['rps']:.3f}" for n, o in pairs)
              + "; CPU/req: " + " ".join(f"{n['cpu_us'] / o['cpu_us']:.3f}" for n, o in pairs))
if "traced_old" in rows and "old" in rows:
    print(f"baseline: tracing on, not sampled: {rows['traced_old']['rps'] / rows['old']['rps']:.3f}x "
          "its plain gateway's req/s")
for t, rs in runs.items():
    for r in rs:
        if r["non2xx"] or r["socket"]:
            print(f"warning: {names[t]}: {r['non2xx']} non-2xx responses; {r['socket']}")
