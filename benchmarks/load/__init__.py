"""Load tests: the floor server, the load generator and the floor-vs-riskwire comparison."""
