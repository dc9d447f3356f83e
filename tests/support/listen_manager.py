"""A ServiceManager application whose 2 forked workers serve HTTP on pyinit's socket.

Run as a `listen` service of pyinit: the manager gets the sockets, and each
forked worker takes them with `self.sockets` (listen_app.HttpService).
"""

from listen_app import HttpService

from pyinit import ServiceManager

manager = ServiceManager()
manager.add(HttpService, workers=2)
manager.run()
