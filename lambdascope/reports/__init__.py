"""Reading stored audit reports: shared views (views), figures (plots) and self-contained HTML
pages (html). Importing this package alone pulls in neither matplotlib nor numpy."""

# The largest HTML page the registry stores beside a report (PutReportRequest.html); a page is
# a few hundred KB (five plots at 110 dpi).
MAX_PAGE_BYTES = 4 << 20
# Every report page's Content-Security-Policy: nothing runs or loads but inline images and style.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
