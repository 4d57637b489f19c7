"""Datasets: records, parsers, the dataset registry, preparation (download, checks, conversion), synthocc."""
