"""Only for the single-file pyz: keep the app's Python setup out of the init.

Two jobs, both no-ops when pyinit runs from an installed package (and a
third, `exit_now()`, for both):

* `isolate()`: the pyz runs with whatever interpreter the image has, in the
  application's environment. A `PYTHONPATH=/app` holding a `logging/` or
  `selectors.py`, or a site-packages with an old psutil, must not change
  what the init imports. So sys.path is cut down to the pyz itself and the
  standard library before anything else is imported. (The shebang cannot
  carry `-I`: `#!/usr/bin/env python3` takes no flags portably.)

* `import_psutil()`: psutil is native code, and a shared object cannot be
  loaded from inside a zip. Writing it to a file would open a door: anyone
  who can write there could swap in their own code for PID 1 to run. So the
  bytes go into an anonymous memory file (`memfd_create`) that only this
  process can reach, and the dynamic loader opens it as /proc/self/fd/N.
  When that fails (no /proc, an architecture the pyz does not carry),
  pyinit works without psutil.

Layout inside the pyz (written by build_zipapp.py): pyinit and the pure
Python dependencies at the top; psutil's native modules as
`_native/<machine>/<module>.so` for each architecture carried.
"""

import posix  # os without its ~1 ms of imports: see pyinit/core/__init__.py
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import ModuleType
    from typing import NoReturn


def _archive() -> str | None:
    """Path of the zip this module was loaded from, or None."""
    return getattr(globals().get("__loader__"), "archive", None)


def isolate() -> None:
    """Keep only the pyz and the standard library on sys.path (pyz only)."""
    archive = _archive()
    if archive is None or (sys.flags.isolated and sys.flags.no_site):
        return  # installed, or the pyz's launcher (-I -S): nothing but the stdlib to cut
    import os

    stdlib = os.path.dirname(os.__file__)
    from_env = set(os.environ.get("PYTHONPATH", "").split(os.pathsep)) - {""}

    def is_stdlib(entry: str) -> bool:
        if entry in from_env or "site-packages" in entry or "dist-packages" in entry:
            return False
        return entry == stdlib or entry.startswith(stdlib + os.sep) or entry.endswith(".zip")

    sys.path[:] = [archive] + [entry for entry in sys.path if entry != archive and is_stdlib(entry)]


class _NativeFinder:
    """Finds `psutil._psutil_*` in the pyz's `_native/<machine>/` folder."""

    def __init__(self, archive: str, loader: object) -> None:
        self.archive = archive
        self.loader = loader

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> "ModuleSpec | None":
        package, _, leaf = fullname.rpartition(".")
        if package != "psutil" or not leaf.startswith("_psutil_"):
            return None
        import os

        member = os.path.join(self.archive, "_native", os.uname().machine, leaf + ".so")
        try:
            data = self.loader.get_data(member)  # type: ignore[attr-defined]
        except OSError:
            return None  # this architecture is not carried; psutil's import fails cleanly
        fd = os.memfd_create(leaf, os.MFD_CLOEXEC)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        # The descriptor stays open: the loader maps the file when the module
        # is created, after find_spec returns. One fd, close-on-exec.
        where = f"/proc/self/fd/{fd}"
        from importlib.machinery import ExtensionFileLoader
        from importlib.util import spec_from_file_location

        return spec_from_file_location(fullname, where, loader=ExtensionFileLoader(fullname, where))


def import_psutil() -> "tuple[ModuleType | None, str]":
    """psutil, or None and the reason it could not be loaded."""
    archive = _archive()
    if archive is not None and not any(isinstance(f, _NativeFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _NativeFinder(archive, globals()["__loader__"]))
    try:
        import psutil
    except Exception as error:  # ImportError, OSError from the loader, ...
        return None, f"{type(error).__name__}: {error}"
    return psutil, "loaded from the pyz" if archive else "loaded"


def exit_now(code: int) -> "NoReturn":
    """Exit with `code`, skipping the interpreter's teardown.

    Teardown (clearing every module, a last collection) cost 1.4 ms after
    `pyinit -- true`, a fifth of the interpreter's own start-up, to free
    memory the kernel frees anyway. What of it matters is done here: the
    atexit functions (logging's flush, for JSON logs), then stdout and
    stderr are flushed.
    """
    atexit = sys.modules.get("atexit")  # never imported: nothing registered (~20 us saved)
    if atexit is not None:
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass  # closed or broken: teardown would only have said "Exception ignored"
    posix._exit(code)
