"""CPU an init spends per reaped orphan, orphans arriving one at a time.

Issue 7, item 28. Each init runs as PID 1 of its own PID namespace
(`unshare --pid --fork --mount-proc`, needs root) with a child that makes
COUNT orphans one after the other: it forks a middle process that forks a
grandchild and exits; the grandchild, reparented to the init, exits at once.
Unlike bench_core's zombie storm (1,000 zombies reaped per wakeup), each
orphan here is its own SIGCHLD, wakeup and reap, so the init's per-orphan
path is what is measured. The init's CPU (utime + stime from
/proc/PID/stat) is read when the child reports it is done and no zombie is
left, minus what it had used when the child started.

    python bench/bench_orphans.py [--count 10000] [--runs 3] INIT_ARGV... [-- INIT_ARGV...]
    e.g. python bench/bench_orphans.py --runs 3 -- tini -s -- python3 dist/pyinit.pyz
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CHILD = r"""
import os, sys
count = int(sys.argv[1])
print("start", flush=True)
sys.stdin.readline()
for _ in range(count):
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            os._exit(0)
        os._exit(0)
    os.waitpid(middle, 0)
print("done", flush=True)
sys.stdin.readline()
"""

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def zombies(pid: int) -> int:
    count = 0
    for kid in children(pid):
        try:
            with open(f"/proc/{kid}/stat") as f:
                count += f.read().rpartition(")")[2].split()[0] == "Z"
        except OSError:
            pass
    return count


def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.005)


def measure(init: list[str], count: int) -> float:
    """Microseconds of init CPU per orphan."""
    argv = ["unshare", "--pid", "--fork", "--mount-proc", *init, "--"]
    argv += [sys.executable, "-S", "-c", CHILD, str(count)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "start"
        init_pid = children(proc.pid)[0]
        before = cpu_seconds(init_pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        wait_for(lambda: zombies(init_pid) == 0, 30)
        used = cpu_seconds(init_pid) - before
        proc.stdin.write("end\n")
        proc.stdin.close()
        proc.wait(30)
        return used / count * 1e6
    finally:
        proc.kill()
        proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("inits", nargs="+", help="init argv words; several inits split by --")
    args = parser.parse_args()
    inits: list[list[str]] = [[]]
    for word in args.inits:
        if word == "--":
            inits.append([])
        else:
            inits[-1].append(word)
    for init in filter(None, inits):
        samples = [measure(init, args.count) for _ in range(args.runs)]
        shown = ", ".join(f"{s:.1f}" for s in samples)
        print(f"{' '.join(init)}: {min(samples):.1f} us/orphan (runs: {shown})", flush=True)


if __name__ == "__main__":
    main()
