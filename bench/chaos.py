#!/usr/bin/env python3
"""Chaos benchmark of `lococo serve` (loopback only, bounded in time and count).

Well-behaved clients stream completions and check every reply against the one
the same request got before the chaos began, while other clients send what a
hostile or careless stranger would: endless chunked bodies, gzip bombs,
oversized lengths, header bytes one at a time, malformed JSON, and streams
they hang up on. /health is probed throughout and the server's RSS sampled.
Writes a JSON report (and a Markdown table beside it).

  bench/chaos.py --binary build/lococo --model models/lococo-tiny --seconds 300 --out out/bench/chaos
"""
import argparse
import gzip
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

PROMPTS = ["Call me Ishmael.", "It was the best of times,", "The sea was calm", "In the beginning"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="build/lococo")
    p.add_argument("--model", default="models/lococo-tiny")
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--good-clients", type=int, default=8)
    p.add_argument("--max-cache-bytes", type=int, default=256 << 20)
    p.add_argument("--out", default="out/bench/chaos")
    return p.parse_args()


class Server:
    def __init__(self, args):
        self.log_path = os.path.join(args.out, "serve.log")
        self.log = open(self.log_path, "w")
        cmd = [args.binary, "serve", "-m", args.model, "--port", "0", "--parallel", "2", "--queue", "4",
               "--max-cache-bytes", str(args.max_cache_bytes), "--header-timeout", "5", "--body-timeout", "10",
               "--max-body", str(1 << 20), "--timeout", "60"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = 0
        for _ in range(1200):
            m = re.search(r"http://127\.0\.0\.1:(\d+)", open(self.log_path).read())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if not self.port:
            sys.exit("chaos: lococo serve did not start (see %s)" % self.log_path)
        # The served process (serve re-executes itself once with its thread settings).
        self.pid = self.proc.pid

    def rss(self):
        try:
            for line in open("/proc/%d/status" % self.pid):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.health_worst = 0.0
        self.health_failures = 0
        self.rss_peak = 0

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n


def completion(port, prompt, timeout=120):
    """A streamed completion: (status, text, finished)."""
    body = json.dumps({"prompt": prompt, "max_tokens": 16, "stream": True, "temperature": 0})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            r.read()
            return r.status, "", False
        text, done = "", False
        for line in r:
            line = line.decode("utf-8", "replace").strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            event = json.loads(line[6:])
            for choice in event.get("choices", []):
                text += choice.get("text", "")
        return 200, text, done
    finally:
        c.close()


def good_client(port, want, until, stats):
    rng = random.Random(threading.get_ident())
    while time.time() < until:
        prompt = rng.choice(PROMPTS)
        try:
            status, text, done = completion(port, prompt)
        except (OSError, http.client.HTTPException) as e:
            stats.add("good_transport_errors")
            continue
        if status == 503:
            stats.add("good_503_retried")
            time.sleep(0.2)
            continue
        if status == 200 and done and text == want[prompt]:
            stats.add("good_served_correct")
        else:
            stats.add("good_wrong")
            stats.add("good_wrong_status_%d" % status)


def raw(port, data, read=True, timeout=15):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        return s.recv(4096) if read else b""
    finally:
        s.close()


def head(extra):
    return ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s\r\n" % extra).encode()


def attack_chunked(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        s.sendall(head("Transfer-Encoding: chunked\r\n"))
        chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
        for _ in range(256):  # up to 16 MiB against a 1 MiB limit
            s.sendall(chunk)
    except OSError:
        pass
    finally:
        s.close()


BOMB = gzip.compress(b" " * (64 << 20), 9)


def attack_gzip(port):
    raw(port, head("Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(BOMB)) + BOMB)


def attack_oversized(port):
    raw(port, head("Content-Length: 50000000000\r\n"))


def attack_slow(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nX-Slow: ")
        for _ in range(20):
            time.sleep(0.5)
            s.sendall(b"a")
    except OSError:
        pass
    finally:
        s.close()


def attack_malformed(port):
    for body in [b"{not json", b"[]", b'{"prompt": 5}', b'{"prompt": "x", "max_tokens": 1e300}',
                 b'{"prompt": "x", "cache": {"budget": 65536, "chunk": 8192}}']:
        raw(port, head("Content-Length: %d\r\n" % len(body)) + body)
    raw(port, b"GARBAGE / HTTP/9.9\r\n\r\n")


def attack_disconnect(port):
    body = json.dumps({"prompt": "Call me", "max_tokens": 100000, "ignore_eos": True, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        s.sendall(head("Content-Length: %d\r\n" % len(body)) + body)
        s.recv(1024)
    except OSError:
        pass
    finally:
        s.close()


ATTACKS = [attack_chunked, attack_gzip, attack_oversized, attack_slow, attack_malformed, attack_disconnect]


def attacker(port, until, stats, seed):
    rng = random.Random(seed)
    while time.time() < until:
        attack = rng.choice(ATTACKS)
        try:
            attack(port)
        except (OSError, http.client.HTTPException):
            pass
        stats.add(attack.__name__)


def prober(server, until, stats):
    while time.time() < until:
        t0 = time.time()
        try:
            c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            c.request("GET", "/health")
            ok = c.getresponse().status == 200
            c.close()
        except (OSError, http.client.HTTPException):
            ok = False
        latency = time.time() - t0
        with stats.lock:
            stats.health_worst = max(stats.health_worst, latency)
            stats.health_failures += 0 if ok else 1
            stats.rss_peak = max(stats.rss_peak, server.rss())
        stats.add("health_probes")
        time.sleep(0.2)


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    server = Server(args)
    want = {}
    for p in PROMPTS:  # each prompt's reply before the chaos: the reference
        status, text, done = completion(server.port, p)
        if status != 200 or not done:
            sys.exit("chaos: the reference request failed (%d)" % status)
        want[p] = text
    rss_start = server.rss()
    stats = Stats()
    until = time.time() + args.seconds
    threads = [threading.Thread(target=good_client, args=(server.port, want, until, stats))
               for _ in range(args.good_clients)]
    threads += [threading.Thread(target=attacker, args=(server.port, until, stats, i)) for i in range(8)]
    threads.append(threading.Thread(target=prober, args=(server, until, stats)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alive = server.proc.poll() is None
    exit_code = server.stop()
    report = {
        "seconds": args.seconds,
        "server": "lococo serve --parallel 2 --queue 4 --max-cache-bytes %d --max-body 1048576" % args.max_cache_bytes,
        "good_clients": args.good_clients,
        "counts": stats.counts,
        "health_worst_seconds": round(stats.health_worst, 4),
        "health_failures": stats.health_failures,
        "rss_start_bytes": rss_start,
        "rss_peak_bytes": stats.rss_peak,
        "max_cache_bytes": args.max_cache_bytes,
        "server_alive_at_end": alive,
        "server_exit_code": exit_code,
    }
    with open(os.path.join(args.out, "chaos.json"), "w") as f:
        json.dump(report, f, indent=2)
    c = stats.counts
    with open(os.path.join(args.out, "chaos.md"), "w") as f:
        f.write("| metric | value |\n|---|---|\n")
        for k, v in [("well-behaved replies, correct", c.get("good_served_correct", 0)),
                     ("well-behaved replies, wrong", c.get("good_wrong", 0)),
                     ("well-behaved 503s (retried)", c.get("good_503_retried", 0)),
                     ("attacks sent", sum(v for k2, v in c.items() if k2.startswith("attack_"))),
                     ("/health worst latency (s)", report["health_worst_seconds"]),
                     ("/health failures", stats.health_failures),
                     ("peak RSS (MiB)", round(stats.rss_peak / 2**20, 1)),
                     ("server alive at end / exit code", "%s / %s" % (alive, exit_code))]:
            f.write("| %s | %s |\n" % (k, v))
    print(json.dumps(report, indent=2))
    ok = alive and exit_code == 0 and c.get("good_wrong", 0) == 0 and stats.health_failures == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
