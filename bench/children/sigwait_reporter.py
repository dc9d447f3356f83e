"""Signal-receipt reporter for the forwarding-latency stage of bench_core.py.

It blocks SIGUSR1 and takes it with sigwaitinfo(), so receipt costs one
syscall return and no Python handler runs between the kernel and the clock
read. Every receipt is written to stdout as one 8-byte little-endian
time.monotonic_ns(); the bench reads the same clock just before os.kill().

stdout, not an extra descriptor, carries the records because an init may
close every descriptor but 0, 1 and 2 before exec (pyinit does: SPEC 9).
The first record is this process's pid: the ready handshake, written only
after SIGUSR1 is blocked, so no signal sent after it can kill us by default.
SIGTERM and SIGKILL keep their default actions so the bench can stop us.
"""

import os
import signal
import struct
import sys
import time


def main() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    out = sys.stdout.fileno()
    os.write(out, struct.pack("<Q", os.getpid()))
    wanted = {signal.SIGUSR1}
    while True:
        signal.sigwaitinfo(wanted)
        now = time.monotonic_ns()
        os.write(out, struct.pack("<Q", now))


if __name__ == "__main__":
    main()
