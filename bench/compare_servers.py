#!/usr/bin/env python3
"""The same Fooocus-API requests against two running servers, side by side (issue 15's server rows).

Typically focal and the real Fooocus-API, both serving the tiny SDXL fixture on this machine:

    focal serve --port 8890 --base-model tests/fixtures/tiny-sdxl/tiny-sdxl-a.safetensors ...
    (the seed: see the oracle's launcher, port 8899, --always-cpu 2 --all-in-fp32 ...)
    python3 bench/compare_servers.py --a http://127.0.0.1:8890 --b http://127.0.0.1:8899

Measures, per server: one sync text-to-image request (256x256, 4 Euler/Karras steps, CFG 5, no styles,
after a warm-up; best and median of --repeat), and --jobs async requests submitted at once, timed until
the last finishes. Prints a table with the a/b ratios. Standard library only.
"""
import argparse
import json
import statistics
import time
import urllib.request

BODY = {
    "prompt": "a photograph of an astronaut riding a horse, highly detailed",
    "negative_prompt": "blurry, low quality",
    "style_selections": [],
    "performance_selection": "Speed",
    "aspect_ratios_selection": "256*256",
    "image_number": 1,
    "image_seed": 42,
    "guidance_scale": 5.0,
    "sharpness": 2.0,
    "advanced_params": {"overwrite_step": 4, "sampler_name": "euler", "scheduler_name": "karras"},
}


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def get(url):
    with urllib.request.urlopen(url, timeout=600) as r:
        return json.loads(r.read())


def sync_request(base, seed):
    t = time.perf_counter()
    out = post(f"{base}/v1/generation/text-to-image", dict(BODY, image_seed=seed))
    elapsed = time.perf_counter() - t
    if not isinstance(out, list) or not out or out[0].get("finish_reason") != "SUCCESS":
        raise SystemExit(f"{base}: unexpected answer {str(out)[:300]}")
    return elapsed


def async_jobs(base, jobs):
    t = time.perf_counter()
    ids = [post(f"{base}/v1/generation/text-to-image", dict(BODY, image_seed=100 + i, async_process=True))["job_id"] for i in range(jobs)]
    pending = set(ids)
    while pending:
        for job in list(pending):
            stage = get(f"{base}/v1/generation/query-job?job_id={job}").get("job_stage")
            if stage in ("SUCCESS", "ERROR"):
                if stage == "ERROR":
                    raise SystemExit(f"{base}: job {job} failed")
                pending.discard(job)
        time.sleep(0.02)
    return time.perf_counter() - t


def measure(base, repeat, jobs):
    sync_request(base, 1)  # warm-up: model load, caches
    times = [sync_request(base, 2 + i) for i in range(repeat)]
    return {"sync_best": min(times), "sync_median": statistics.median(times), f"async_{jobs}_jobs": async_jobs(base, jobs)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="base URL of the server measured (focal)")
    ap.add_argument("--b", required=True, help="base URL of the baseline (the real Fooocus-API)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=8)
    args = ap.parse_args()
    a = measure(args.a, args.repeat, args.jobs)
    b = measure(args.b, args.repeat, args.jobs)
    print(f"{'measurement':<16} {'a s':>8} {'b s':>8} {'a/b':>6}")
    for key in a:
        print(f"{key:<16} {a[key]:8.3f} {b[key]:8.3f} {a[key] / b[key]:6.2f}")


if __name__ == "__main__":
    main()
