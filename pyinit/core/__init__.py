"""PID 1 primitives: the loop, signals, reaping, spawning, exit statuses, logs.

Both modes stand on these; nothing here imports from any other pyinit package.
"""
