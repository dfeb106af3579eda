"""Read a WARC file back with warcio, the reader web archives use, and
print what it found as one JSON object: records by type, each response's
target URI and HTTP status, and every problem warcio reported (a record it
cannot parse ends the run with an exception; a digest that does not match
the bytes is a problem).

Usage: python3 read_warc.py FILE.warc
"""

import json
import sys

try:
    from warcio.archiveiterator import ArchiveIterator
except ImportError:
    sys.exit("warcio is missing: python3 -m pip install warcio")

counts = {}
responses = []
problems = []
with open(sys.argv[1], "rb") as stream:
    records = ArchiveIterator(stream, check_digests=True)
    for record in records:
        counts[record.rec_type] = counts.get(record.rec_type, 0) + 1
        # Read every byte, so the block and payload digests are checked.
        while record.content_stream().read(1 << 20):
            pass
        if record.digest_checker.passed is False:
            problems.extend(record.digest_checker.problems)
        if record.rec_type == "response":
            status = record.http_headers.get_statuscode() if record.http_headers else None
            responses.append(
                {
                    "uri": record.rec_headers.get_header("WARC-Target-URI"),
                    "status": int(status) if status else None,
                }
            )
print(json.dumps({"counts": counts, "responses": responses, "problems": problems}))
