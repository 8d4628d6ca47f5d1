"""`make bench`: this toolkit next to its peers, measured in one run on one machine.

See tools/bench/README.md for what is measured and how; `python -m tools.bench --help` for the
options.
"""
