"""The report as a web page: charts as inline SVG, the HTML page, and the live dashboard's
server (which alone needs the `web` extra)."""
