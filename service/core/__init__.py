"""The service's base: settings, logging, the event loop, the database, the API key."""
