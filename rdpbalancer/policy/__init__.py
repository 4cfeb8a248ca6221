"""Pure routing policy: model, identity, sticky table, balancing, router. No I/O, no asyncio."""
