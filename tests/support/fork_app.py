"""A cotyledon-style application for tests/test_service_manager.py; argv[1] picks a scenario.

There is no `if __name__ == "__main__":` guard, on purpose: cotyledon forks
its workers, so none of its examples has one, and code ported to pyinit must
not need one either (issue 10).
"""

import functools
import os
import signal
import sys
import threading

from pyinit import Service, ServiceManager

MANAGER_PID = os.getpid()


def say(line):
    # One write(2) per line: workers share the pipe, print() may split a line.
    os.write(1, (line + "\n").encode())


class Marker:
    """An object JSON cannot carry: it must arrive as itself, not as a string."""

    def __init__(self):
        self.token = "marker-token"


class Echo(Service):
    def __init__(self, worker_id, *args, **kwargs):
        super().__init__(worker_id)
        self.args = args
        self.kwargs = kwargs

    def run(self):
        kinds = ",".join(type(a).__name__ for a in self.args) or "-"
        say(f"run {self.name} {self.worker_id} {os.getpid()} {kinds}")

    def terminate(self):
        say(f"terminate {self.name} {self.worker_id}")


class Short(Service):
    """Dies on its own with status 3, once started."""

    def run(self):
        say(f"run short {self.worker_id} {os.getpid()}")
        sys.exit(3)


class Orphaner(Service):
    """Leaves a grandchild behind that outlives the worker (PID 1 must reap it)."""

    def run(self):
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "0.3"])
        say(f"run orphaner {self.worker_id} {os.getpid()}")
        os._exit(0)


class Hang(Service):
    """terminate() never returns: only the manager's graceful_shutdown_timeout ends it."""

    def run(self):
        say(f"run hang {self.worker_id} {os.getpid()}")

    def terminate(self):
        say(f"terminate hang {self.worker_id}")
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
        threading.Event().wait()


def factory(worker_id, label):
    return Echo(worker_id, label)


def on_new_worker(service_id, worker_id, service):
    say(
        f"new {service_id} {worker_id} {type(service).__name__} "
        f"in-worker={os.getpid() != MANAGER_PID and os.getppid() == MANAGER_PID}"
    )


def on_dead_worker(service_id, worker_id, exit_code):
    say(f"dead {service_id} {worker_id} {exit_code}")


scenario = sys.argv[1] if len(sys.argv) > 1 else "basic"
manager = ServiceManager(graceful_shutdown_timeout=1 if scenario == "hang" else 5)
manager.register_hooks(on_terminate=lambda: say("terminate hook"))

if scenario == "basic":
    manager.add(Echo, workers=2)
elif scenario == "objects":
    manager.add(Echo, args=((1, 2), Marker(), lambda: 1), kwargs={"when": Marker()})
elif scenario == "factories":
    manager.add(factory, args=("f",))
    manager.add(functools.partial(factory, label=3))
    for bad in (lambda: manager.add("foo"), lambda: manager.add(Echo, workers=0)):
        try:
            bad()
        except (TypeError, ValueError) as error:
            say(f"refused {type(error).__name__}: {error}")
    try:
        ServiceManager()
    except RuntimeError as error:
        say(f"seatbelt {error}")
    say(f"default name {Echo.name}")
elif scenario == "hooks":
    manager.add(Echo, workers=2)
    manager.register_hooks(on_new_worker=on_new_worker, on_dead_worker=on_dead_worker)
elif scenario == "shutdown":
    manager.add(Echo, workers=2)
    short = manager.add(Short)

    def stop_when_short_dies(service_id, worker_id, exit_code):
        say(f"dead {service_id} {worker_id} {exit_code}")
        if service_id == short:
            manager.shutdown()

    manager.register_hooks(on_dead_worker=stop_when_short_dies)
elif scenario == "early-term":
    manager.add(Echo, workers=2)
    os.kill(os.getpid(), signal.SIGTERM)
    say("still alive before run()")
elif scenario == "hang":
    manager.add(Hang, workers=2)
elif scenario == "thread-scale":
    echo = manager.add(Echo)

    def scale_from_a_thread():
        def scale_then_linger():
            manager.reconfigure(echo, 2)
            threading.Event().wait(0.5)  # outlive the new worker's start-up, then end

        thread = threading.Thread(target=scale_then_linger)
        thread.start()
        thread.join()
        say("scaling thread gone")

    manager.register_hooks(on_reload=scale_from_a_thread)
elif scenario == "orphans":
    manager.add(Orphaner)
    manager.add(Echo)
else:
    raise SystemExit(f"unknown scenario {scenario!r}")

manager.run()
