"""Parsers of the prepared dataset layouts (Market-1501 folders, MSMT17 list files) and their shared rules.

:mod:`occreid.data.datasets` holds the registry and ``create_dataset``; these modules do the reading.
"""
