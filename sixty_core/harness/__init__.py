"""The harness: running the service and its upstream as processes, and measuring them."""
