"""The one private helper cotyledon's tests/examples.py imports (`_utils.spawn`)."""

import threading


def spawn(target, *args, **kwargs):
    thread = threading.Thread(target=target, args=args, kwargs=kwargs, daemon=True)
    thread.start()
    return thread
