"""Validation, estimation and editing (VEE) of the readings central stores."""
