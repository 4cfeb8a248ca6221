"""Server health: the rise/fall state machine (pure), probes and the monitor task (asyncio)."""
