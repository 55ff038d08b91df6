"""The name a record may have (a model, a dataset, a job's state file): one rule for every
service, so a model the trainer is asked to register is refused, or not, as the registry would.
1-200 letters, digits, '.', '_' or '-', starting with a letter or digit: safe in object keys,
URLs and file names, with no '/' (which separates a sharing team's name from its record's)."""
from __future__ import annotations

import re

RECORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
