#!/usr/bin/env python3
"""The client side of bench/realapp.sh: browses the Django app through lacquer (and, for the
checks where the app's own behaviour is the reference, directly) and prints what happened.

Standard library only (http.client): each "browser" is a cookie jar plus the headers a
browser sends. What reached the app is read from the app's request log (REALAPP_LOG, one JSON
line per request, written by realapp/middleware.py before the response leaves the app).

Exit status: 0 when every check passes, 1 otherwise."""
import argparse
import gzip
import http.client
import json
import os
import random
import re
import string
import sys
import time
import urllib.parse
from http.cookies import SimpleCookie

BROWSER_AE = "gzip, deflate, br"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value)
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def cache_status(self):
        return self.header("Cache-Status") or "-"

    @property
    def hit(self):
        return self.cache_status.startswith("lacquer; hit")

    @property
    def bypass(self):
        return "fwd=bypass" in self.cache_status

    def text(self):
        body = self.body
        if self.header("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return body.decode("utf-8", "replace")


class Browser:
    """One visitor: a cookie jar and the headers of a current browser."""

    def __init__(self, base, cookies=None, accept_encoding=BROWSER_AE):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.origin = f"{u.scheme}://{u.netloc}"
        self.jar = dict(cookies or {})
        self.accept_encoding = accept_encoding

    def request(self, method, path, form=None, headers=None):
        h = {
            "User-Agent": UA,
            "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
            "Accept-Language": "en-GB,en;q=0.5",
        }
        if self.accept_encoding:
            h["Accept-Encoding"] = self.accept_encoding
        if self.jar:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
            h["Origin"] = self.origin
            h["Referer"] = self.origin + path
        h.update(headers or {})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            resp = Resp(r.status, r.getheaders(), data)
        finally:
            conn.close()
        for sc in resp.all("Set-Cookie"):
            c = SimpleCookie()
            c.load(sc)
            for name, m in c.items():
                if m["max-age"] == "0" or m.value == "":
                    self.jar.pop(name, None)
                else:
                    self.jar[name] = m.value
        return resp

    def get(self, path, **kw):
        return self.request("GET", path, **kw)


def form_token(resp):
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', resp.text())
    return m.group(1) if m else None


class AppLog:
    """What the app received, from its request log."""

    def __init__(self, path):
        self.path = path

    def mark(self):
        return os.path.getsize(self.path) if os.path.exists(self.path) else 0

    def since(self, mark):
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            f.seek(mark)
            return [json.loads(line) for line in f.read().decode().splitlines() if line]


def rand(n, alphabet=string.ascii_letters + string.digits):
    return "".join(random.choice(alphabet) for _ in range(n))


def analytics_cookies():
    t = int(time.time())
    return {
        "_ga": f"GA1.1.{random.randint(10**8, 10**9)}.{t}",
        "_gid": f"GA1.1.{random.randint(10**8, 10**9)}.{t}",
        "_ga_ABC123XYZ": f"GS1.1.{t}.1.1.{t}.0.0.0",
    }


class Checks:
    def __init__(self, args):
        self.proxy = args.proxy
        self.app = args.app
        self.admin = args.admin
        self.user, self.password = args.user, args.password
        self.log = AppLog(args.log)
        self.visitors = args.visitors
        self.results = []  # (name, passed, via lacquer, expected)

    # -- helpers ------------------------------------------------------------------------

    def say(self, text=""):
        print(text, flush=True)

    def record(self, name, passed, measured, expected):
        self.results.append((name, passed, measured, expected))
        self.say(f"  => {'PASS' if passed else 'FAIL'}: {measured}")

    def purge_all(self):
        u = urllib.parse.urlsplit(self.admin)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        conn.request("POST", "/purge", body=json.dumps({"all": True}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        conn.close()
        if r.status != 200:
            raise SystemExit(f"admin purge answered {r.status}")

    def metric(self, series):
        """The value of one series on the admin listener's /metrics (0 when absent)."""
        u = urllib.parse.urlsplit(self.admin)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0

    def purge(self, path):
        return Browser(self.proxy, accept_encoding=None).request("PURGE", path)

    def login(self, base):
        b = Browser(base, cookies=analytics_cookies())
        page = b.get("/accounts/login/")
        token = form_token(page)
        r = b.request("POST", "/accounts/login/", form={
            "csrfmiddlewaretoken": token or "", "username": self.user,
            "password": self.password, "next": "/"})
        ok = r.status == 302 and "sessionid" in b.jar
        return b, ok, r

    def public_pages(self):
        home = Browser(self.app).get("/").text()
        statics = re.findall(r'(?:href|src)="(/static/[^"]+)"', home)
        return ["/", "/articles/1/", "/articles/2/", "/articles/3/", "/articles/999/"] + statics

    # -- checks -------------------------------------------------------------------------

    def hit_ratio(self, name, make_cookies):
        pages = self.public_pages()
        self.purge_all()
        mark = self.log.mark()
        hits = total = 0
        statuses = {}
        first = {}
        for v in range(self.visitors):
            b = Browser(self.proxy, cookies=make_cookies())
            for p in pages:
                r = b.get(p)
                total += 1
                hits += r.hit
                statuses.setdefault(p, []).append(r.cache_status)
                first.setdefault(p, r.status)
        seen = self.log.since(mark)
        ratio = hits / total
        best = (self.visitors - 1) / self.visitors
        later = total - len(pages)
        later_hits = sum(r.startswith("lacquer; hit") for s in statuses.values() for r in s[1:])
        self.say(f"  {self.visitors} visitors x {len(pages)} URLs = {total} requests, "
                 f"{hits} hits ({ratio:.0%}); the app received {len(seen)}; visitors 2-"
                 f"{self.visitors}: {later_hits}/{later} hits")
        for p in pages:
            s = statuses[p]
            second = s[1] if len(s) > 1 else "-"
            self.say(f"    {p:<44} {first[p]}  1st: {s[0]}")
            self.say(f"    {'':<44}      2nd: {second}")
        cookies_seen = sorted({c for line in seen for c in line["cookies"]})
        if cookies_seen:
            self.say(f"  cookies the app received on these requests: {', '.join(cookies_seen)}")
        passed = hits >= (self.visitors - 1) * len(pages)
        self.record(name, passed, f"{hits}/{total} hits ({ratio:.0%}), app got {len(seen)}",
                    f">= {best:.0%} (only each URL's first visit reaches the app)")

    def anonymous(self):
        self.say("\n[1] anonymous visitors (no cookies)")
        self.hit_ratio("hit ratio, anonymous", dict)

    def csrftoken_visitors(self):
        self.say("\n[2] visitors carrying only csrftoken + analytics cookies (_ga, _gid, _ga_*)")
        self.hit_ratio("hit ratio, csrftoken + _ga",
                       lambda: {"csrftoken": rand(32), **analytics_cookies()})

    def logged_in(self):
        self.say("\n[3] a logged-in user (sessionid) is never served from the cache")
        # the anonymous copies are in the cache first, so a hit would be visible
        for p in ["/", "/articles/1/"]:
            Browser(self.proxy).get(p)
            Browser(self.proxy).get(p)
        b, ok, r = self.login(self.proxy)
        self.say(f"  login through lacquer: POST /accounts/login/ -> {r.status} "
                 f"{r.header('Location') or ''} ({r.cache_status}); sessionid set: {'sessionid' in b.jar}")
        if not ok:
            self.record("logged-in user bypasses cache", False, "login failed", "bypass, app sees all")
            return
        mark = self.log.mark()
        paths = ["/", "/articles/1/", "/admin/", "/", "/articles/1/", "/admin/"]
        resps = [(p, b.get(p)) for p in paths]
        seen = [line for line in self.log.since(mark) if "sessionid" in line["cookies"]]
        bypassed = sum(r.bypass for _, r in resps)
        personal = sum(("Signed in as " + self.user) in r.text() or "Site administration" in r.text()
                       for _, r in resps)
        for p, r in resps:
            self.say(f"    GET {p:<14} {r.status}  {r.cache_status}")
        anon = Browser(self.proxy).get("/")
        leak = ("Signed in as " + self.user) in anon.text()
        self.say(f"  app received {len(seen)}/{len(paths)} of them (with sessionid); "
                 f"personalised pages: {personal}/{len(paths)}; anonymous / afterwards shows "
                 f"the user's page: {leak}")
        passed = bypassed == len(paths) and len(seen) == len(paths) and not leak
        self.record("logged-in user bypasses cache", passed,
                    f"bypass {bypassed}/{len(paths)}, app got {len(seen)}/{len(paths)}, leak: {leak}",
                    "bypass 6/6, app got 6/6, no leak")

    def two_tabs_once(self, base, tab_a, tab_b, other_first=False):
        """Same cookie jar: GET form A, GET form B, POST both. With other_first, another
        visitor submits /contact/ just before (which must not make lacquer forget that
        /contact/ is hit-for-miss)."""
        if other_first:
            other = Browser(base, cookies=analytics_cookies())
            page = other.get("/contact/")
            other.request("POST", "/contact/", form={
                "csrfmiddlewaretoken": form_token(page) or "", "name": "Other",
                "message": "hello from another visitor"})
        b = Browser(base, cookies=analytics_cookies())
        mark = self.log.mark()
        a_page = b.get(tab_a)
        cookie_a = b.jar.get("csrftoken")
        mark_b = self.log.mark()
        b_page = b.get(tab_b)
        got_b = [line["cookies"] for line in self.log.since(mark_b) if line["method"] == "GET"]
        rotated = b.jar.get("csrftoken") != cookie_a

        def form(path, page, who):
            if path == "/contact/":
                return {"csrfmiddlewaretoken": form_token(page) or "", "name": who,
                        "message": f"hello from {who.lower()}"}
            return {"csrfmiddlewaretoken": form_token(page) or "", "username": self.user,
                    "password": self.password, "next": "/"}

        # login() rotates the CSRF token: the login form is submitted last
        posts = [("A", tab_a, a_page), ("B", tab_b, b_page)]
        if tab_a == "/accounts/login/":
            posts.reverse()
        got = {tab: b.request("POST", path, form=form(path, page, "Tab " + tab))
               for tab, path, page in posts}
        reasons = [line["csrf_failure"] for line in self.log.since(mark) if line["csrf_failure"]]
        return (a_page, b_page, got["A"], got["B"], reasons, (got_b[0] if got_b else None),
                rotated, [tab for tab, _, _ in posts])

    def two_tabs(self):
        self.say("\n[4] two forms open in two tabs (one cookie jar: GET A, GET B, POST A, POST B)")
        outcomes = []
        cases = [("/contact/", "/contact/", False), ("/contact/", "/accounts/login/", False),
                 ("/accounts/login/", "/contact/", True)]
        for tab_a, tab_b, other_first in cases:
            label = f"{tab_a} + {tab_b}"
            if other_first:
                self.say("  (then: another visitor submits /contact/ just before; the login "
                         "form is submitted last, as login() rotates the token)")
            for where, base in [("direct to app", self.app), ("via lacquer", self.proxy)]:
                a, bp, ra, rb, reasons, got_b, rotated, order = self.two_tabs_once(
                    base, tab_a, tab_b, other_first)
                ok = ra.status == 302 and rb.status == 302
                self.say(f"  {label:<28} {where:<13}: GET A {a.status} ({a.cache_status}), "
                         f"GET B {bp.status} ({bp.cache_status})")
                self.say(f"  {'':<28} {'':<13}  cookies the app got with GET B: "
                         f"{', '.join(got_b) if got_b else 'none'}; GET B replaced the "
                         f"csrftoken cookie: {'yes' if rotated else 'no'}")
                res = {"A": ra.status, "B": rb.status}
                self.say(f"  {'':<28} {'':<13}  "
                         + ", ".join(f"POST {t} {res[t]}" for t in order)
                         + (f"; CSRF failures: {'; '.join(reasons)}" if reasons else ""))
                if where == "via lacquer":
                    outcomes.append((label + (" after another's POST" if other_first else ""),
                                     ok, ra.status, rb.status))
        passed = all(o[1] for o in outcomes)
        measured = ", ".join(f"{lbl}: POST A {a} / POST B {b}" for lbl, _, a, b in outcomes)
        self.record("two tabs, both forms submit", passed, measured, "302 / 302 (no 403)")

    def compression(self):
        self.say(f"\n[5] compression: the browser sends Accept-Encoding: {BROWSER_AE}")
        rows = []
        for path in ["/", self.public_pages()[-2]]:
            direct = Browser(self.app).get(path)
            self.purge(path)
            mark = self.log.mark()
            miss = Browser(self.proxy).get(path)
            seen = [line for line in self.log.since(mark) if line["path"] == path]
            hit = Browser(self.proxy).get(path)
            ae_app = seen[0]["accept_encoding"] if seen else "(nothing reached the app)"
            self.say(f"  {path}")
            self.say(f"    direct to app : Content-Encoding {direct.header('Content-Encoding') or 'none'}, "
                     f"{len(direct.body)} bytes")
            self.say(f"    via lacquer   : the app received Accept-Encoding: {ae_app!s}")
            for label, r in [("miss", miss), ("hit", hit)]:
                self.say(f"    via lacquer {label:<4}: Content-Encoding {r.header('Content-Encoding') or 'none'}, "
                         f"{len(r.body)} bytes ({r.cache_status})")
            gz_only = Browser(self.proxy, accept_encoding="gzip, deflate").get(path)
            self.say(f"    via lacquer, a 'gzip, deflate' browser: Content-Encoding "
                     f"{gz_only.header('Content-Encoding') or 'none'}, {len(gz_only.body)} bytes")
            ok = (ae_app is not None and "gzip" in str(ae_app)
                  and miss.header("Content-Encoding") == "gzip"
                  and hit.header("Content-Encoding") == "gzip")
            rows.append((path, ok, ae_app, miss, direct))
        passed = all(r[1] for r in rows)
        measured = "; ".join(
            f"{p}: app got AE {ae!s}, {m.header('Content-Encoding') or 'identity'} {len(m.body)} B "
            f"(direct gzip {len(d.body)} B)" for p, _, ae, m, d in rows)
        self.record("gzip reaches a 'gzip, deflate, br' browser", passed, measured,
                    "app gets gzip in Accept-Encoding; Content-Encoding: gzip")

    def logout(self):
        self.say("\n[6] a logout (POST, 302 to /) does not evict / from the cache")
        b, ok, r = self.login(self.proxy)
        if not ok:
            self.record("logout keeps / cached", False, "login failed", "next anonymous / is a hit")
            return
        Browser(self.proxy).get("/")
        warm = Browser(self.proxy).get("/")
        self.say(f"  anonymous / before: {warm.cache_status}")
        page = b.get("/")
        token = form_token(page)
        before = self.metric('lacquer_purged_objects_total{kind="unsafe"}')
        out = b.request("POST", "/accounts/logout/", form={"csrfmiddlewaretoken": token or ""})
        evicted = self.metric('lacquer_purged_objects_total{kind="unsafe"}') - before
        self.say(f"  POST /accounts/logout/ -> {out.status} Location: {out.header('Location')} "
                 f"({out.cache_status}); sessionid still set: {'sessionid' in b.jar}")
        self.say(f"  objects lacquer evicted for it (lacquer_purged_objects_total{{kind=\"unsafe\"}}): "
                 f"{evicted:g}")
        after = Browser(self.proxy).get("/")
        self.say(f"  anonymous / after : {after.cache_status}")
        passed = warm.hit and out.status == 302 and after.hit
        self.record("logout keeps / cached", passed,
                    f"logout {out.status}; / after: {after.cache_status}", "/ after logout is a hit")

    def cold_head(self, tries=8):
        self.say(f"\n[7] a cold HEAD fills the cache and is answered from the fill "
                 f"({tries} x: PURGE, HEAD, GET)")
        path = "/articles/7/"
        said_stored = hits = truthful = 0
        mark = self.log.mark()
        for i in range(tries):
            self.purge(path)
            h = Browser(self.proxy).request("HEAD", path)
            g = Browser(self.proxy).get(path)
            stored = "stored" in h.cache_status
            said_stored += stored
            hits += g.hit
            truthful += stored == g.hit
            self.say(f"    try {i + 1}: HEAD {h.status} {h.cache_status}  |  GET {g.cache_status}")
        seen = self.log.since(mark)
        by_method = {}
        for line in seen:
            by_method[line["method"]] = by_method.get(line["method"], 0) + 1
        heads = by_method.get("HEAD", 0)
        self.say(f"  the app received {len(seen)} requests for {tries} HEAD + {tries} GET "
                 f"({', '.join(f'{m} {n}' for m, n in sorted(by_method.items()))})")
        self.record("cold HEAD stores (GET after is a hit)", hits == tries,
                    f"GET hit {hits}/{tries}", f"{tries}/{tries} hits")
        # the HEAD waits for its background GET and is answered from what it stored, so the
        # app sees one GET per cold HEAD, and the HEAD's Cache-Status says whether it stored
        self.record("cold HEAD answered from its fill", heads == 0 and truthful == tries,
                    f"HEAD said stored {said_stored}/{tries} (GET after hit {hits}/{tries}), "
                    f"HEADs the app received: {heads}",
                    f"stored {tries}/{tries}, app gets no HEAD")

    def run(self):
        for check in [self.anonymous, self.csrftoken_visitors, self.logged_in, self.two_tabs,
                      self.compression, self.logout, self.cold_head]:
            try:
                check()
            except Exception as e:  # a check that crashes is a failed check, the rest still run
                self.record(check.__name__, False, f"error: {e!r}", "-")
        self.say("\nSummary")
        w = max(len(r[0]) for r in self.results)
        self.say(f"  {'check':<{w}}  result  measured (expected)")
        for name, passed, measured, expected in self.results:
            self.say(f"  {name:<{w}}  {'PASS' if passed else 'FAIL':<6}  {measured} ({expected})")
        failed = sum(not r[1] for r in self.results)
        self.say(f"\n{len(self.results) - failed} passed, {failed} failed")
        return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxy", required=True, help="lacquer's proxy listener, http://127.0.0.1:PORT")
    ap.add_argument("--admin", required=True, help="lacquer's admin listener")
    ap.add_argument("--app", required=True, help="the app itself (gunicorn), for reference checks")
    ap.add_argument("--log", required=True, help="the app's request log (REALAPP_LOG)")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", default="bench-realapp-pw")
    ap.add_argument("--visitors", type=int, default=10)
    args = ap.parse_args()
    random.seed(15)
    sys.exit(Checks(args).run())


if __name__ == "__main__":
    main()
