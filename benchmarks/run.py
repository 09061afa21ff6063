"""`make bench`: every benchmark, one JSON line each, then one summary line with all figures.

Each ratio compares against a baseline measured in the same run on the same inputs. `--smoke` (`make
bench-quick`, which CI runs) runs every benchmark at its smallest size, so a change that breaks one fails CI;
its figures mean little and its lines say `"smoke": true`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (  # noqa: E402
    bench_any_steps,
    bench_avc,
    bench_codec,
    bench_compress,
    bench_dc_first,
    bench_group_orders,
    bench_long,
    bench_orders,
    bench_resume,
    bench_shard,
    bench_storage,
    bench_store,
    bench_temporal,
    bench_tokenizer,
    bench_train,
    bench_verify,
    bench_video,
)

SMOKE = [("codec", bench_codec.run), ("shard_overhead", bench_codec.shard_overhead),
         ("shard", lambda: bench_shard.run(n_images=8, size=64, rss=False)), ("train", lambda: bench_train.run(2)),
         ("orders", bench_orders.run), ("store", lambda: bench_store.run(crops=4)),
         ("storage", lambda: bench_storage.run(smoke=True)), ("video", lambda: bench_video.run(1, 8, 2)),
         ("verify", lambda: bench_verify.run(crops=2)), ("resume", lambda: bench_resume.run(crops=2, batches=2)),
         ("tokenizer", bench_tokenizer.run),
         ("group_orders", lambda: bench_group_orders.summary(0.01)),
         ("any_steps", lambda: bench_any_steps.summary(1)),
         ("compress", lambda: bench_compress.summary(0.01)),
         ("long", lambda: bench_long.summary(1)),
         ("dc_first", lambda: bench_dc_first.summary(1)),
         ("temporal", lambda: bench_temporal.summary(1)),
         ("avc", bench_avc.run)]


def main() -> None:
    results = {}
    quick = "--quick" in sys.argv  # skips the 50k-input driver-memory run
    smoke = "--smoke" in sys.argv
    if smoke:
        os.environ["VISTOK_BENCH_SMOKE"] = "1"  # the benchmarks' own sizes shrink too (`benchmarks.common.smoke`)
    benches = SMOKE if smoke else [("codec", bench_codec.run), ("shard_overhead", bench_codec.shard_overhead),
               ("shard", lambda: bench_shard.run(rss=not quick)), ("train", bench_train.run),
               ("orders", bench_orders.run), ("store", bench_store.run), ("storage", bench_storage.run), ("video", bench_video.run),
               ("verify", bench_verify.run), ("resume", bench_resume.run),
               ("tokenizer", bench_tokenizer.run),
               ("group_orders", lambda: bench_group_orders.summary(0.2 if quick else 0.5)),
               ("any_steps", lambda: bench_any_steps.summary(20 if quick else 40)),
               ("compress", lambda: bench_compress.summary(1.0 if quick else 2.0)),
               ("long", lambda: bench_long.summary(10 if quick else 20)),
               ("dc_first", lambda: bench_dc_first.summary(6 if quick else 10)),
               ("temporal", lambda: bench_temporal.summary(10 if quick else 20)),
               ("avc", bench_avc.run)]
    for name, fn in benches:
        t0 = time.perf_counter()
        res = fn()
        res = {**res, "seconds": round(time.perf_counter() - t0, 1), **({"smoke": True} if smoke else {})}
        print(json.dumps({"bench": name, **res}), flush=True)
        results[name] = res
    print(json.dumps({"bench": "all", **{f"{k}.{m}": v for k, r in results.items() for m, v in r.items()}}))


if __name__ == "__main__":
    main()
