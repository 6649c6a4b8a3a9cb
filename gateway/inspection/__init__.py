"""Spot-check inspection (issue 6 point 4): the plan's sampling rules, risk weighting, the inspection list."""
