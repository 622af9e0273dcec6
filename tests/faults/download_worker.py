"""``python -m faults.download_worker URL ROOT SHA256``.

``jukemir.assets.retrieve`` one asset, as a killable process.
"""

import sys

from jukemir.assets import Asset, DownloadError, retrieve

url, root, checksum = sys.argv[1:4]
try:
    path = retrieve(
        Asset("BLOB", "blobs/blob.bin", (url,), checksum),
        root,
        retries=2,
        backoff=0.05,
        timeout=10,
        progress=False,
    )
except DownloadError as exc:
    print(exc, file=sys.stderr)
    raise SystemExit(1) from None
print(path)
