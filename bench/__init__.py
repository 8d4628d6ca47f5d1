"""`make bench`: this toolkit next to its peers, measured in one run on one machine.

See bench/README.md for what is measured and how; `python -m bench --help` for the options.
"""
