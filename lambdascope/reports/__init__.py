"""Reading stored audit reports: shared views (views), figures (plots) and self-contained HTML
pages (html). Importing this package alone pulls in neither matplotlib nor numpy."""

# The largest HTML page the registry stores beside a report (PutReportRequest.html); a page is
# a few hundred KB (five plots at 110 dpi).
MAX_PAGE_BYTES = 4 << 20
