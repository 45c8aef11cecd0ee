"""The analyst report: charts and tables read from the warehouse.

Local tooling, not installed on workers.
"""
