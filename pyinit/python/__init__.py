"""Python services: the `Service` class, its worker process, and `ServiceManager`."""
