"""The cohort studio: the `/ui/` page, and the routes it needs beyond the assignment API
(overview, explain, lookalike, rename and pin). Its JavaScript and CSS are package data in
`static/`; the charts are drawn by the vendored Vega and Vega-Lite builds in `static/vendor/`."""
