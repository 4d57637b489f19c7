"""Params access for stages: the validation itself lives in the library (:mod:`occreid.config`)."""

from occreid.config import PARAMS_FILE, from_dict, merge, read_yaml, to_dict

__all__ = ["PARAMS_FILE", "from_dict", "merge", "read_yaml", "to_dict"]
