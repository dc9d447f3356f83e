"""`pyinit ctl` and the health port: server, client, and the protocol they share."""
