"""The asyncio shell: the only code that touches client and backend sockets."""
