"""Collection O&M: coverage, success, timeliness and accuracy figures, the worklist of
failing meters, gateway health, the reading-day readiness check, and commands to gateways."""
