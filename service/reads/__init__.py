"""The read side the query API and the console share: parameters, bodies, their queries."""
