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
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--json")
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
    if a.json:
        json.dump({str(k): v for k, v in stats.items()}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
