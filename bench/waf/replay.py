#!/usr/bin/env python3
"""Replays crates/portcullis/tests/data/crs/requests.jsonl against any loopback port and prints
detection per family, the whole-attack share of SQLi and XSS, and negatives flagged.

    bench/waf/replay.py --port 8080 [--json out.json]

A request counts as refused when the answer is 403 (blocked) or 400 (refused as malformed):
either way it never reaches the application.
"""
import argparse, base64, collections, json, os, socket, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "..", "crates", "portcullis", "tests", "data", "crs", "requests.jsonl")


def status_of(port, raw, timeout=5.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(raw)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return 0
    parts = data.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if status == 429:
        # A rate limit answering instead of the WAF would read as "not detected": the figures
        # would be the limiter's, so stop rather than print them.
        sys.exit(f"port {port} answered 429: turn its rate limit off for this replay")
    return status


def replay(port, corpus=CORPUS):
    verdicts = []
    for line in open(corpus, encoding="utf-8"):
        case = json.loads(line)
        status = status_of(port, base64.b64decode(case["request"]))
        verdicts.append((case, status in (400, 403)))
    return verdicts


def table(verdicts, clean=None):
    """Per-family counts; `clean` (a set of line numbers) restricts negatives to clean probes."""
    stats = collections.defaultdict(collections.Counter)
    for index, (case, refused) in enumerate(verdicts):
        c = stats[case["family"]]
        if case["expect"] == "positive":
            c["pos"] += 1; c["pos_hit"] += refused
            if case.get("whole"):
                c["whole"] += 1; c["whole_hit"] += refused
        else:
            c["neg"] += 1; c["neg_flagged"] += refused
            if clean is None or index in clean:
                c["clean"] += 1; c["clean_flagged"] += refused
    return stats


def pct(a, b):
    return f"{100 * a / b:5.1f}%" if b else "    -"


def refused_share(port, values, as_body):
    """Share of `values` refused when sent as a form field (POST) or a query argument (GET)."""
    import urllib.parse
    refused = 0
    for value in values:
        encoded = urllib.parse.quote_plus(value)
        if as_body:
            body = f"message={encoded}".encode()
            raw = (f"POST /comment HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                   f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        else:
            raw = f"GET /search?q={encoded} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        refused += status_of(port, raw) in (400, 403)
    return refused, len(values)


def libinjection_lines(prefix):
    root = os.path.join(HERE, "..", "..", "crates", "waf", "tests", "data", "libinjection")
    import urllib.parse
    values = []
    for name in sorted(os.listdir(root)):
        if name.startswith(prefix) and name.endswith(".txt"):
            for line in open(os.path.join(root, name), encoding="utf-8", errors="replace"):
                line = line.rstrip("\r\n")
                if line and not line.startswith("#"):
                    values.append(urllib.parse.unquote_plus(line))
    return values


def prose_sentences(limit=3000):
    """English sentences from /usr/share/doc, filtered as crates/waf/tests/benign.rs does."""
    import gzip, re
    found = []
    for root, _, files in sorted(os.walk("/usr/share/doc")):
        for name in sorted(files):
            low = name.lower()
            if not (low.startswith(("readme", "news")) or low == "copyright" or low.endswith(".txt")):
                continue
            path = os.path.join(root, name)
            try:
                data = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
            except OSError:
                continue
            text = " ".join(data.decode("utf-8", "replace").split())
            for sentence in re.split(r"(?<=\. )", text):
                sentence = sentence.strip()
                words = sentence.split(" ")
                if not 6 <= len(words) <= 60 or any(c in sentence for c in "{}<>$=;|`\\@#*_"):
                    continue
                alpha = sum(1 for w in words if w.strip("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~").isalpha())
                if alpha * 10 >= len(words) * 9 and sentence[:1].isupper():
                    found.append(sentence)
            if len(found) >= limit:
                return found[:limit]
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--json")
    ap.add_argument("--extra", action="store_true", help="also libinjection's samples and English prose")
    a = ap.parse_args()
    t0 = time.time()
    verdicts = replay(a.port)
    clean = {i for i, (case, _) in enumerate(verdicts) if case.get("clean")}
    stats = table(verdicts, clean)
    total = collections.Counter()
    print(f"{'family':8} {'detected':>16} {'whole attacks':>16} {'negatives flagged':>20} {'clean negatives flagged':>24}")
    for family in sorted(stats):
        c = stats[family]; total.update(c)
        print(f"{family:<8} {c['pos_hit']:>5}/{c['pos']:<4} {pct(c['pos_hit'], c['pos'])} "
              f"{c['whole_hit']:>5}/{c['whole']:<4} {pct(c['whole_hit'], c['whole'])} "
              f"{c['neg_flagged']:>8}/{c['neg']:<4} {pct(c['neg_flagged'], c['neg'])} "
              f"{c['clean_flagged']:>11}/{c['clean']:<4} {pct(c['clean_flagged'], c['clean'])}")
    c = total
    print(f"{'total':<8} {c['pos_hit']:>5}/{c['pos']:<4} {pct(c['pos_hit'], c['pos'])} "
          f"{c['whole_hit']:>5}/{c['whole']:<4} {pct(c['whole_hit'], c['whole'])} "
          f"{c['neg_flagged']:>8}/{c['neg']:<4} {pct(c['neg_flagged'], c['neg'])} "
          f"{c['clean_flagged']:>11}/{c['clean']:<4} {pct(c['clean_flagged'], c['clean'])}   ({time.time() - t0:.1f}s)")
    results = {str(k): v for k, v in stats.items()}
    if a.extra:
        for name, values, as_body in (
            ("libinjection SQLi samples refused", libinjection_lines("sqli-"), False),
            ("libinjection XSS samples refused", libinjection_lines("xss-"), False),
            ("libinjection false positives refused", libinjection_lines("false_positives"), False),
            ("English sentences refused", prose_sentences(), True),
        ):
            refused, total = refused_share(a.port, values, as_body)
            results[name] = [refused, total]
            print(f"{name:40} {refused:>6}/{total:<6} {pct(refused, total)}")
    if a.json:
        json.dump(results, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
