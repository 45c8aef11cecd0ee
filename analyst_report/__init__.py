"""The analyst report: charts and tables read from the warehouse.

Local tooling, not installed on workers. `report` is the command line
(`python -m analyst_report.report`, docs/report.md); `queries` runs the SQL under sql/ as of
one moment; `charts` draws the figures and `photos` fetches the fines' thumbnails;
`contents` builds the Report from them; `page` renders it as one HTML page.
"""
