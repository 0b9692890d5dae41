"""The data layer's error type, in a module with no imports.

Why a leaf: `reports/`, the CLI and the site adapters all raise or catch `DataError`;
importing it from here costs nothing and pulls in neither the site registry nor pandas.
`bench.data.sites` re-exports it, so `from bench.data.sites import DataError` keeps working.
"""


class DataError(Exception):
    """Bad or missing input data. The message names the file and what is wrong."""
