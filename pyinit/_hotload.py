"""The pyz's fast path: the single-command modules from one marshalled table.

Only for `pyinit.pyz` run as a program. Its sh launcher (build_zipapp.LAUNCHER)
reads a table written by the build between the launcher and the zip:
{module name: (is a package, code object)} for build_zipapp.HOT_MODULES,
with this module's own code, and runs that code with the table in its
globals; this installs `HotFinder` first on sys.meta_path. The launcher does
so only on the Python version the build compiled for (the code objects are
version-specific); any other version imports from the zip as before.

Why: zipimport is pure Python. To import one module it reads and unmarshals
its .pyc twice (once in find_spec for the file name, once to run it), and
the first import from the pyz reads the zip's whole central directory (145
entries, psutil and the services modules included). For the ~15 modules of
`pyinit -- true` that was ~0.5 ms of a start-up whose floor (python3 -I -S)
is 6.4 ms. One read and one unmarshal of the table costs a fraction of it.

Everything else (services mode, the dependencies) still comes from the zip:
the packages' __path__ point into it, so zipimport finds their submodules.
Tracebacks and `_bootstrap` (psutil's native module) ask the loader for
sources and data, which it takes from the zip.
"""

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import CodeType, ModuleType
    from zipimport import zipimporter

_ModuleSpec = type(sys.__spec__)  # importlib.machinery.ModuleSpec, without importing importlib


class HotFinder:
    """Finder and loader of the modules in `table`, which live in `archive` (the pyz)."""

    def __init__(self, archive: str, table: "dict[str, tuple[bool, CodeType]]") -> None:
        self.archive = archive
        self.table = table
        self._zip: zipimporter | None = None

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> "ModuleSpec | None":
        entry = self.table.get(fullname)
        if entry is None:
            return None
        is_package = entry[0]
        where = f"{self.archive}/{fullname.replace('.', '/')}"
        # .pyc, as zipimport names a module it loads from its .pyc; then
        # ModuleSpec.cached needs no cache_from_source() (~45 us for all).
        origin = where + ("/__init__.pyc" if is_package else ".pyc")
        spec = _ModuleSpec(fullname, self, origin=origin)  # type: ignore[arg-type]  # a Loader
        spec.has_location = True
        if is_package:
            spec.submodule_search_locations = [where]  # cold submodules: zipimport
        return spec

    def create_module(self, spec: "ModuleSpec") -> None:
        return None  # the default module object

    def exec_module(self, module: "ModuleType") -> None:
        # Popped: the code object is not needed twice, and a re-import after
        # `del sys.modules[...]` falls through to zipimport.
        code = self.table.pop(module.__name__)[1]
        exec(code, module.__dict__)

    def _zipimporter(self) -> "zipimporter":
        if self._zip is None:
            from zipimport import zipimporter

            self._zip = zipimporter(self.archive)
        return self._zip

    def get_source(self, fullname: str) -> str | None:
        """For tracebacks (linecache): the .py beside the .pyc in the zip."""
        return self._zipimporter().get_source(fullname)

    def get_data(self, pathname: str) -> bytes:
        """A file of the zip (`_bootstrap` reads psutil's native module so)."""
        return self._zipimporter().get_data(pathname)


def preload(finder: HotFinder) -> None:
    """Run the hot modules now, in the table's order, without the import system.

    The build orders the table so that each module comes after the hot
    modules it imports at its top (build_zipapp.dependency_order): their
    `import` statements then find them done in sys.modules, and the import
    system's own work for each module (spec, module lock, attributes: ~10 us
    a module, ~0.12 ms for all) is not done. A module already imported (the
    order missed a dependency) is skipped; pyinit.__main__, which runs
    pyinit, is left to the launcher's import.
    """
    for name in list(finder.table):
        if name in sys.modules or name.endswith(".__main__"):
            continue
        spec = finder.find_spec(name)
        assert spec is not None
        module = type(sys)(name)
        package = spec.submodule_search_locations
        attributes = {"__spec__": spec, "__loader__": finder, "__file__": spec.origin}
        attributes["__cached__"] = spec.origin  # as ModuleSpec.cached gives it (see find_spec)
        attributes["__package__"] = name if package is not None else name.rpartition(".")[0]
        if package is not None:
            attributes["__path__"] = package
        module.__dict__.update(attributes)
        sys.modules[name] = module
        try:
            finder.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        parent, _, leaf = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], leaf, module)


_table = globals().pop("HOT_TABLE", None)
if _table is not None:  # run by the launcher, with the table: take over the hot modules
    _finder = HotFinder(sys.path[-1], _table)  # the launcher appended the pyz
    sys.meta_path.insert(0, _finder)
    preload(_finder)
