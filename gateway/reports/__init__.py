"""Inspectors' exports (issue 6 points 3 and 5): the ledger (工作台账) and the city summary report."""
