"""Two real readers of PyPI's JSON API, pointed at Larder (tests/e2e/json_api.rs, issue 24).

`dependabot INDEX_URL NAME`: reads it the way Dependabot's cooldown does
(dependabot-core, python/lib/dependabot/python/package/package_details_fetcher.rb,
`fetch_from_json_registry` and `format_version_release`): the index URL's trailing `/simple/`
becomes `/pypi/`, then `GET <that>/<name as written>/json` with `Accept: application/json`
(redirects followed, as its Excon client does), and for each version of `releases` the last
file's `upload_time`, `yanked`, `yanked_reason`, `packagetype` and `python_version`.

`pypi-json ENDPOINT NAME [VERSION]`: the `pypi-json` client library (its `PyPIJSON` takes any
endpoint), which builds its `ProjectMetadata` from the answer's top-level keys.

Each prints one JSON object on stdout for the test to check.
"""

import base64
import json
import re
import sys
import urllib.request
from datetime import datetime


def dependabot(index_url, name, token=None):
    json_url = re.sub(r"/simple/?$", "/pypi/", index_url, flags=re.IGNORECASE)
    req = urllib.request.Request(f"{json_url.rstrip('/')}/{name}/json", headers={"Accept": "application/json"})
    if token:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"x:{token}".encode()).decode())
    with urllib.request.urlopen(req) as resp:
        data = json.loads(resp.read())
    releases = {}
    for version, files in data["releases"].items():
        if not files:
            continue
        last = files[-1]
        released = datetime.fromisoformat(last["upload_time"]) if last.get("upload_time") else None
        releases[version] = {
            "released_at": released.isoformat() if released else None,
            "yanked": last.get("yanked") or False,
            "yanked_reason": last.get("yanked_reason"),
            "package_type": last.get("packagetype"),
            "python_version": last.get("python_version"),
        }
    return {"releases": releases}


def pypi_json(endpoint, name, version=None):
    from pypi_json import PyPIJSON

    with PyPIJSON(endpoint=endpoint) as client:
        meta = client.get_metadata(name, version)
        out = {"name": meta.name, "version": str(meta.version), "last_serial": meta.last_serial}
        if meta.releases is not None:
            out["latest"] = str(meta.get_latest_version())
            out["digests"] = {v: [f["digest"] for f in fs] for v, fs in meta.get_releases_with_digests().items()}
        out["urls"] = [f["url"] for f in meta.urls]
        return out


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    result = dependabot(*args) if mode == "dependabot" else pypi_json(*args)
    print(json.dumps(result, sort_keys=True))
