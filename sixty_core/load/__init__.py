"""Load runs: the standard scenario, raw samples and their exact statistics, live probes
of the service, and the ``load.json`` result. Nothing here imports Locust (which patches
the process with gevent on import): the locustfile imports these, never the reverse."""
