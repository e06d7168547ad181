"""One module per ``spikeforge`` verb, each with ``add_parser(subparsers)``."""
