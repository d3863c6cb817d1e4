#!/usr/bin/env python3
"""Turn the raw lines of tests/bench/installed.sh into the "As installed"
section of docs/benchmarks.md (printed on stdout). The context (package
version, load, exposure scores, the sandbox lines undone) comes in the
environment."""
import os
import sys
from collections import defaultdict

NAMES = {
    "plain": "plain `rsync.service` (no TLS, the floor)",
    "stunnel": "the seed: `stunnel@.service`, `exec = /usr/bin/rsync`",
    "default": "installed default: `rsync-ssl.socket` + `rsync-ssl.service`",
    "isolated": "`rsync-ssl-isolated.socket` + `rsync-ssl-isolated@.service`",
}
ORDER = ["plain", "stunnel", "default", "isolated"]


def pct(v, p):
    v = sorted(v)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, max(0, int(round(p / 100 * len(v) + 0.5)) - 1))]


def ms(us):
    return us / 1000.0


lists, fails = defaultdict(list), defaultdict(int)
cold, warm, calib = [], [], []
cpu, conc, pull = {}, {}, {}
sbx, sbxfail = defaultdict(list), defaultdict(int)
for line in open(sys.argv[1]):
    f = line.split()
    if not f:
        continue
    k = f[0]
    if k == "calib":
        calib.append(int(f[2]))
    elif k == "list":
        if f[2] == "fail":
            fails[f[1]] += 1
        else:
            lists[f[1]].append(int(f[2]))
    elif k in ("cold", "warm") and f[2] != "fail":
        (cold if k == "cold" else warm).append(int(f[2]))
    elif k == "cpu":
        n = int(f[2])
        b1, b2, a1, a2 = map(int, f[3:7])
        if min(b1, b2, a1, a2) >= 0:
            cpu[f[1]] = ((a1 - b1) / n / 1000, (a2 - b2) / n / 1000)
    elif k == "conc":
        conc[(f[1], int(f[2]), f[3])] = (int(f[4]), int(f[5]), int(f[6]))
    elif k == "pull":
        b1, b2, a1, a2 = map(int, f[4:8])
        cpus = (a1 - b1) / 1e6 + (a2 - b2) / 1e6 if min(b1, b2, a1, a2) >= 0 else float("nan")
        pull.setdefault(f[1], []).append((int(f[2]), f[3], cpus))
    elif k == "sbx":
        if f[2] == "fail":
            sbxfail[f[1]] += 1
        else:
            sbx[f[1]].append(int(f[2]))

env = os.environ
out = []
w = out.append
release = env.get("RELEASE", "Debian 12")
w("## As installed" + ("" if release == "Debian 12" else ", " + release))
w("")
w("`make bench-installed` (tests/bench/installed.sh): the package (%s) installed in a booted %s under"
  " systemd-nspawn, in a network namespace with only a loopback; the client (stock `rsync-ssl`, openssl type;"
  " plain `rsync` for the floor) in that namespace. Every row is from the same container and the same run;"
  " listings are interleaved rounds, the order rotated each round." % (env.get("VER", "?"), release))
w("")
w("| setup | listing p50 / p95 ms | server CPU per listing ms (service + systemd) | %s MiB pull s (server CPU-s), `rsync-ssl-shim rsync`, median of %d |"
  % (env.get("BIG", "1024"), max([len(v) for v in pull.values()] or [0])))
w("|---|---|---|---|")
for s in ORDER:
    v = [ms(x) for x in lists[s]]
    c = cpu.get(s)
    p = pull.get(s)
    cs = "%.1f + %.1f" % c if c else "-"
    if p:
        ps = "%.2f (%.2f)" % (pct([x[0] / 1e6 for x in p], 50), pct([x[2] for x in p], 50))
        if s != "plain" and pull.get("plain"):
            ps += ", %.2f× plain" % (pct([x[0] for x in p], 50) / pct([x[0] for x in pull["plain"]], 50))
        bad = [x[1] for x in p if x[1] != "0"]
        if bad:
            ps += " **%s**" % ", ".join(bad)
    else:
        ps = "-"
    fl = " (%d failed)" % fails[s] if fails[s] else ""
    w("| %s | %.1f / %.1f%s | %s | %s |" % (NAMES[s], pct(v, 50), pct(v, 95), fl, cs, ps))
w("")
if cold:
    w("The default service's first listing after it exited (it starts with the sandbox and loads the"
      " credentials once per burst): p50 %.1f ms over %d cold starts, against %.1f ms for the listing right"
      " after it." % (pct([ms(x) for x in cold], 50), len(cold), pct([ms(x) for x in warm], 50)))
    w("")
w("Simultaneous listings (wall time for all; failures, of which told `@ERROR: max connections`):")
w("")
ns = sorted({k[1] for k in conc})
hdr = "| setup |" + "".join(" %d from 1 address | %d from 8 |" % (n, n) for n in ns)
w(hdr)
w("|---|" + "---|" * (2 * len(ns)))
for s in ORDER:
    row = "| %s |" % s
    for n in ns:
        for mode in ("one", "eight"):
            c = conc.get((s, n, mode))
            if not c:
                row += " - |"
                continue
            wall, fl, told = c
            cell = "%.2f s" % (wall / 1e6)
            if fl:
                cell += ", %d failed (%d told)" % (fl, told)
            else:
                cell += ", 0 failed"
            row += " %s |" % cell
    w(row)
w("")
base = sbx.get("isolated", [])
if base:
    b50 = pct([ms(x) for x in base], 50)
    undo = env.get("UNDO", "").splitlines()
    w("What each sandbox line of the service costs per connection where the sandbox is set up per connection"
      " (the isolated units): listing p50 of a copy of `rsync-ssl-isolated@.service` with that line undone by a"
      " drop-in, all copies interleaved (%d rounds). Negative saving = noise. Lines that `DynamicUser=yes`"
      " implies (ProtectSystem=strict, PrivateTmp, NoNewPrivileges, RestrictSUIDSGID) stay in force in the"
      " other rows." % len(base))
    w("")
    w("| undone | listing p50 ms | saving ms |")
    w("|---|---|---|")
    w("| nothing (the shipped sandbox) | %.1f | - |" % b50)
    rows = []
    for i, u in enumerate(undo):
        v = [ms(x) for x in sbx.get("sbx%d" % i, [])]
        fl = sbxfail.get("sbx%d" % i, 0)
        if v:
            rows.append((b50 - pct(v, 50), u.replace("|", ", "), pct(v, 50), fl))
        elif fl:
            w("| `%s` | every listing failed (%d) | - |" % (u.replace("|", ", "), fl))
    singles = [r for r in rows if r[1].count(",") < 4]
    groups = [r for r in rows if r[1].count(",") >= 4]
    for saving, u, p50, fl in sorted(singles, reverse=True) + groups:
        w("| `%s` | %.1f%s | %.1f |" % (u, p50, " (%d failed)" % fl if fl else "", saving))
    va = [ms(x) for x in sbx.get("sbxall", [])]
    if va:
        w("| all of the above | %.1f | %.1f |" % (pct(va, 50), b50 - pct(va, 50)))
    w("")
w("Exposure (`systemd-analyze security`, online, in the container): rsync-ssl.service %s,"
  " rsync-ssl-isolated@.service %s." % (env.get("SEC_DEFAULT", "?"), env.get("SEC_ISOLATED", "?")))
w("systemd's \"Too many incoming connections\" journal lines during the run (the isolated units' MaxConnections="
  " refusing): %s; socket trigger limits hit: %s." % (env.get("DROPS", "?"), env.get("TRIGGERS", "?")))
w("Server CPU per listing: the server's own CPU and that of every process it reaped (for the isolated"
  " units, everything PID 1 reaped: the instances, including the sandbox set-up systemd does in the forked"
  " child), plus PID 1's own CPU, over %s sequential listings; clock-tick resolution." % env.get("CPU_N", "40"))
if calib:
    w("Load: load average %s (before -> after); a fixed 32 MiB sha256 took %d-%d ms (median %d) across the"
      " rounds; busy processes at the end: %s" % (env.get("LOAD", "?"), min(calib), max(calib),
                                                  pct(calib, 50), env.get("OTHERS", "-") or "none"))
raw = "benchmarks-installed%s.raw" % env.get("MARK", "")
w("Raw numbers: [%s](%s)." % (raw, raw))
print("\n".join(out))
