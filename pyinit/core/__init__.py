"""PID 1 primitives: the loop, signals, reaping, spawning, exit statuses, logs.

Both modes stand on these; nothing here imports from any other pyinit package.

The modules of the single-command path (build_zipapp.HOT_MODULES) use
`posix`, the C module that `os` re-exports, and not `os`: importing `os`
also imports `collections.abc`, `posixpath` and `stat`, ~1 ms of a 6.5 ms
interpreter start-up (`python3 -I -S` imports none of them). One difference
to mind: `posix.environ` is the environment as bytes, read at start-up.
Code off that path (services mode, notify, the terminal hand-over) imports
`os` as usual.
"""
