"""The fan-out benchmark: `make bench` (full run) or `python -m bench --smoke`."""
