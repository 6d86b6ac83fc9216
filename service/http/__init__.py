"""HTTP plumbing every surface shares: serving, relaying, client addresses, answers, errors."""
