"""The edge upstream and its clients: a stand-in for the Supabase "deals" Edge Function.

The package is split so that the deal service imports only what it uses:

- :mod:`sixty_core.edge.protocol`: the wire contract both sides share (paths, headers,
  size limits, JSON encoding);
- :mod:`sixty_core.edge.upstream`: the fault-injectable upstream ASGI app, which runs as a
  process of its own (``python -m sixty_core.harness.servers edge``);
- :mod:`sixty_core.edge.client`: the legacy and optimized clients the service creates deals
  with.

Nothing is imported here, so ``import sixty_core.edge.client`` never loads the upstream.
"""
