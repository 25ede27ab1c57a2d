#!/usr/bin/env python3
"""Turn the OWASP CRS regression tests (go-ftw YAML) into the JSON lines our tests replay.

    pip install pyyaml sqlglot html5lib
    bench/waf/apache-crs.sh start 18280 1 /tmp/crs-reference
    scripts/crs-corpus.py ../shared/corpus/crs-regression --reference-port 18280 \
        > crates/portcullis/tests/data/crs/requests.jsonl

One line per test stage of the families 930 (LFI), 931 (RFI), 932 (RCE), 941 (XSS) and
942 (SQLi) that says which rule must or must not fire:

    {"family": 942, "rule": 942100, "test": 3, "expect": "positive", "whole": true,
     "request": "<base64 of the raw HTTP/1.1 request>"}

The raw request is built as go-ftw builds it (the same logic as shared/tools/crs_replay.py).

`whole` separates whole attacks from single-keyword fragments among the SQLi and XSS positives
(it is null elsewhere). CRS tests single rules, so many positives are fragments like
`benchmark(` or `<a href="test"`, which no application would execute. A payload is a whole
attack when splicing it into the context it targets changes what runs there:

- SQLi: spliced into `SELECT a FROM t WHERE c = <ctx>PAYLOAD<ctx> AND d = 1` for <ctx> empty,
  `'` and `"`, the query parses (sqlglot, MySQL dialect) into more than one statement, or into
  one whose structure differs from the query with a harmless value: its clauses (UNION, ORDER
  BY, LIMIT, ...) or the boolean skeleton of its WHERE (AND/OR/NOT over predicates, so an added
  `OR 1=1` counts and a truncating comment counts, but `c = 1=1` or `c = lo_get(1)` does not).
- XSS: spliced into `<div>PAYLOAD</div>`, `<input value="PAYLOAD">`, `<input value='PAYLOAD'>`
  and `<a href="PAYLOAD">`, the HTML5 parse (html5lib) holds a script element, an event-handler
  attribute, or a javascript:/vbscript:/data:text/html URL that the harmless page does not.

With `--reference-port PORT`, every request is also sent to a reference WAF on that loopback
port (bench/waf/apache-crs.sh: Apache with mod_security2 and Debian's CRS at paranoia 1), and
`reference_refused` records whether it answered 403 or 400. CRS's "must not fire" tests check
one rule, so many of them are attacks another rule must catch (`;cat /etc/passwd` as a negative
of 932230). A negative is `clean`, a false-positive probe, when the reference lets it through
and its request is not also a positive of another rule in the corpus.

The candidate payloads of a request are its argument names and values (query, form body, JSON
and XML leaves), its cookies, its header values and its path when it is more than the test
endpoint, each decoded as an application would (percent-decoding, `+` as space). A payload is
tried in the parenthesized point only when it starts by closing a parenthesis.
"""
import base64
import glob
import json
import os
import re
import sys
import urllib.parse
import xml.etree.ElementTree as ET

import html5lib
import sqlglot
from sqlglot import exp
import yaml

FAMILIES = {"930", "931", "932", "941", "942"}
METHODS_WITH_BODY = re.compile(r"^POST|PUT|PATCH|DELETE$")


def _form_escape(data):
    from urllib.parse import unquote_plus, quote_plus
    try:
        if unquote_plus(data) != data:
            return data
    except Exception:
        return data
    out = []
    for tok in data.split("&"):
        if "=" in tok:
            k, v = tok.split("=", 1)
            out.append(quote_plus(k, safe="") + "=" + quote_plus(v, safe=""))
        else:
            out.append(quote_plus(tok, safe=""))
    return "&".join(out)


def build_request(inp):
    """go-ftw's ftwhttp.BuildRequest (v2), as crs_replay.py mirrors it."""
    if inp.get("encoded_request"):
        return base64.b64decode(inp["encoded_request"])
    method = str(inp.get("method", "GET"))
    uri = str(inp.get("uri", "/"))
    version = str(inp.get("version", "HTTP/1.1"))
    hdrs = []
    for k, v in (inp.get("headers") or {}).items():
        hdrs.append([str(k), "" if v is None else str(v)])
    has = lambda n: any(k.lower() == n for k, _ in hdrs)
    get = lambda n: next((v for k, v in hdrs if k.lower() == n), "")
    auto = inp.get("autocomplete_headers", True)
    data = inp.get("data")
    data = "" if data is None else (data if isinstance(data, str) else str(data))
    if data and auto:
        if not has("content-type"):
            hdrs.append(["Content-Type", "application/x-www-form-urlencoded"])
        if get("content-type") == "application/x-www-form-urlencoded":
            data = _form_escape(data)
    if get("content-type").startswith("multipart/form-data;"):
        data = data.replace("\r\n", "\n").replace("\n", "\r\n")
    body = data.encode("utf-8", "surrogateescape")
    if auto:
        if not has("connection"):
            hdrs.append(["Connection", "close"])
        if (body or METHODS_WITH_BODY.search(method)) and not has("content-length"):
            hdrs.append(["Content-Length", str(len(body))])
    head = f"{method} {uri} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
    return head.encode("utf-8", "surrogateescape") + body


def payloads(raw):
    """Candidate payloads of a raw request, decoded once as an application reads them."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    out = []
    parts = lines[0].split(" ")
    target = parts[1] if len(parts) > 1 else "/"
    path, _, query = target.partition("?")
    if len(path.strip("/").split("/")) > 1:
        # Beyond the test endpoint (`/get`, `/post`), the path itself carries the payload.
        out.append(urllib.parse.unquote(path))
    for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True):
        out += [k, v]
    content_type = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        value = value.strip()
        if name.lower() == "content-type":
            content_type = value.lower()
        if name.lower() == "cookie":
            for pair in value.split(";"):
                k, _, v = pair.strip().partition("=")
                out += [urllib.parse.unquote(k), urllib.parse.unquote(v)]
        elif name.lower() not in ("host", "content-length", "connection", "accept", "content-type"):
            out.append(value)
    text = body.decode("utf-8", "replace")
    if "json" in content_type:
        try:
            stack = [json.loads(text)]
            while stack:
                item = stack.pop()
                if isinstance(item, dict):
                    out += list(item.keys())
                    stack += list(item.values())
                elif isinstance(item, list):
                    stack += item
                elif isinstance(item, str):
                    out.append(item)
        except ValueError:
            out.append(text)
    elif "xml" in content_type:
        try:
            for element in ET.fromstring(text).iter():
                out += [element.text or ""] + list(element.attrib.values())
        except ET.ParseError:
            out.append(text)
    elif "multipart" in content_type:
        out.append(text)
    elif text:
        for k, v in urllib.parse.parse_qsl(text, keep_blank_values=True):
            out += [k, v]
        if "=" not in text:
            out.append(urllib.parse.unquote_plus(text))
    return [p for p in out if p and p.strip()]


def _blank(node):
    if isinstance(node, (exp.Literal, exp.Null, exp.Boolean)):
        return exp.Literal.string("_")
    if isinstance(node, exp.Identifier):
        return exp.to_identifier("_")
    return node


def _skeleton(condition):
    """The boolean skeleton of a condition: AND/OR/XOR/NOT kept, every predicate one leaf."""
    if isinstance(condition, (exp.And, exp.Or, exp.Xor)):
        return type(condition)(this=_skeleton(condition.this), expression=_skeleton(condition.expression))
    if isinstance(condition, exp.Not):
        return exp.Not(this=_skeleton(condition.this))
    if isinstance(condition, exp.Paren):
        return _skeleton(condition.this)
    return exp.column("P")


def _sql_shape(sql):
    statements = [s for s in sqlglot.parse(sql, read="mysql", error_level=sqlglot.ErrorLevel.RAISE) if s]
    shapes = []
    for statement in statements:
        where = statement.find(exp.Where)
        if where is not None:
            # sqlglot reads `WHERE c = execute workb` as an alias, which MySQL refuses.
            if where.find(exp.Alias) is not None:
                raise ValueError("alias in WHERE")
            where.set("this", _skeleton(where.this))
        shapes.append(statement.transform(_blank).sql(dialect="mysql"))
    return shapes


# Injection points: a bare value, a value inside parentheses, each in no quotes, '...' or "...".
SQL_TEMPLATES = (
    "SELECT a FROM t WHERE c = {q}{p}{q} AND d = 1",
    "SELECT a FROM t WHERE (c = {q}1{p}{q}) AND d = 1",
)
# What a harmless value may be in each place: a number, a word (a column name when unquoted),
# or nothing.
SQL_HARMLESS = ("1", "x", "")


def whole_sqli(payload):
    # The parenthesized point only for payloads that close it (`) UNION ...`, `') OR ...`).
    closes_paren = re.match(r"""^\s*['"]?\s*\)""", payload) is not None
    for template in SQL_TEMPLATES if closes_paren else SQL_TEMPLATES[:1]:
        for quote in ("", "'", '"'):
            harmless = set()
            for value in SQL_HARMLESS:
                try:
                    harmless.add(tuple(_sql_shape(template.format(q=quote, p=value))))
                except Exception:
                    pass
            try:
                got = tuple(_sql_shape(template.format(q=quote, p=payload)))
            except Exception:
                continue
            if len(got) > 1 or got not in harmless:
                return True
    return False


SCRIPT_URL = re.compile(r"^\s*(?:javascript|vbscript)\s*:|^\s*data\s*:\s*text/html", re.I)
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "data", "xlink:href", "background", "poster", "srcdoc"}


def _executing_nodes(document):
    found = set()
    for element in document.iter():
        tag = element.tag.split("}")[-1] if isinstance(element.tag, str) else ""
        if tag == "script" and ((element.text or "").strip() or element.get("src")):
            found.add(("script", (element.text or "").strip()[:40]))
        for name, value in element.attrib.items():
            name = name.split("}")[-1].lower()
            if name.startswith("on"):
                found.add(("handler", name))
            # Browsers drop tabs and newlines inside a URL before reading its scheme.
            url = re.sub(r"[\t\n\r]", "", value or "")
            if name in URL_ATTRIBUTES and (SCRIPT_URL.search(url) or name == "srcdoc"):
                found.add(("url", name))
    return found


def whole_xss(payload):
    for template in ('<div>{}</div>', '<input value="{}">', "<input value='{}'>", '<a href="{}">x</a>'):
        harmless = _executing_nodes(html5lib.parse(template.format("x")))
        spliced = _executing_nodes(html5lib.parse(template.format(payload)))
        if spliced - harmless:
            return True
    return False


def reference_refused(port, raw):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench", "waf"))
    from replay import status_of
    return status_of(port, raw) in (400, 403)


def main():
    import argparse

    def key(raw):
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        payload_headers = [h for h in lines[1:] if h.lower().startswith((b"referer", b"cookie", b"user-agent", b"x-", b"remote"))]
        return lines[0], body, tuple(payload_headers)

    ap = argparse.ArgumentParser()
    ap.add_argument("root", nargs="?", default="../shared/corpus/crs-regression")
    ap.add_argument("--reference-port", type=int)
    a = ap.parse_args()
    root = a.root
    cases = []
    for path in sorted(glob.glob(os.path.join(root, "*", "*.yaml"))):
        family = os.path.basename(os.path.dirname(path))[8:11]
        if family not in FAMILIES:
            continue
        doc = yaml.safe_load(open(path, encoding="utf-8")) or {}
        rule = doc.get("rule_id")
        for test in doc.get("tests", []):
            for stage in test.get("stages", []):
                stage = stage.get("stage", stage)
                inp, out = stage.get("input", {}) or {}, stage.get("output", {}) or {}
                log = out.get("log") or {}
                expect_ids, no_expect_ids = log.get("expect_ids") or [], log.get("no_expect_ids") or []
                if not expect_ids and not no_expect_ids:
                    continue
                raw = build_request(inp)
                positive = bool(expect_ids)
                whole = None
                if positive and family in ("941", "942"):
                    check = whole_sqli if family == "942" else whole_xss
                    whole = any(check(p) for p in payloads(raw))
                case = {
                    "family": int(family),
                    "rule": rule,
                    "test": test.get("test_id"),
                    "expect": "positive" if positive else "negative",
                    "whole": whole,
                }
                if a.reference_port:
                    case["reference_refused"] = reference_refused(a.reference_port, raw)
                case["request"] = base64.b64encode(raw).decode()
                cases.append((case, raw))
    attacks = {key(raw) for case, raw in cases if case["expect"] == "positive"}
    for case, raw in cases:
        if case["expect"] == "negative":
            case["clean"] = not case.get("reference_refused") and key(raw) not in attacks
        request = case.pop("request")
        case["request"] = request
        print(json.dumps(case))


if __name__ == "__main__":
    main()
