"""The local endpoint's own pages (index, accept, messages, errors) in the worker page's look."""
from __future__ import annotations

import re
import urllib.error
import urllib.request

from crowdprop.mturk_local.pages import SITE_CSS, site_page

from .conftest import hit_kwargs

WORKER_PAGE_LOOK = ("background:#f4f4f4", "font:15px/1.4 system-ui", "#223")
"""What the worker page (hit_templates/hit.html) and the endpoint's pages share."""


def test_site_page_frames_messages_errors_and_tables():
    page = site_page("<b>odd & title</b>", "<p>done</p>")
    assert "<title>&lt;b&gt;odd &amp; title&lt;/b&gt;</title>" in page and "<h1>&lt;b&gt;odd" in page
    assert "<meta name='viewport' content='width=device-width, initial-scale=1'>" in page
    assert f"<style>{SITE_CSS}</style>" in page and all(x in SITE_CSS for x in WORKER_PAGE_LOOK)
    assert "<div class='card ok'><p>done</p></div>" in page  # a message: paragraphs in a card
    err = site_page("Not found", "<p>/x</p>", status=404)
    assert "<div class='card err' role='alert'><p class='code'>HTTP 404</p><p>/x</p></div>" in err
    listing = site_page("local MTurk: 1 HITs", "<p><a href='/_ledger'>ledger</a></p><table><tr><td>h</td></tr></table>")
    assert "card" not in listing.split("<main>", 1)[1]  # not a message
    assert "<div class='scroll'><table><tr><td>h</td></tr></table></div>" in listing  # scrolls by itself on a phone


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8")


def test_index_accept_and_error_pages_are_served_styled(endpoint):
    h, client = endpoint()
    hit = client.create_hit(**hit_kwargs())["HIT"]["HITId"]
    for path, status, words in [
        ("/", 200, ["<h1>local MTurk: 1 HITs</h1>", "<div class='scroll'><table>", hit]),
        (f"/hits/{hit}/accept", 200, [f"<h1>Accept HIT {hit}</h1>", "id='cp-accept'"]),
        ("/no/such/page", 404, ["<h1>Not found</h1>", "<p class='code'>HTTP 404</p><p>/no/such/page</p>"]),
        ("/hits/NOSUCHHIT/accept", 404, ["card err", "HTTP 404"]),
    ]:
        code, page = _get(h.url + path)
        assert code == status, path
        assert page.startswith("<!DOCTYPE html><html lang='en'>") and f"<style>{SITE_CSS}</style>" in page, path
        assert "<header><nav><b>local MTurk</b><a href='/'>HITs and tests</a>" in page
        assert all(w in page for w in words), (path, page[-600:])
        assert len(re.findall(r"<h1>", page)) == 1
