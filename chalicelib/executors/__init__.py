"""Executors of the runs the service performs itself (the work queue), one module per system."""
