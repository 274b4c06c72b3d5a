"""Run by bench/minhash.py with a Python that has datatrove: times its MinHash signature stage.

    python _datatrove_signatures.py DOCS.json OUT_DIR NUM_PERM NGRAM  -> prints {"docs_per_s": ...}
"""

import json
import sys
import time

from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.utils.hashing import HashConfig

docs_path, out_dir, num_perm, ngram = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
texts = json.load(open(docs_path))
buckets = 16
config = MinhashConfig(n_grams=ngram, num_buckets=buckets, hashes_per_bucket=num_perm // buckets,
                       hash_config=HashConfig(precision=64, hash_fc="xxhash"))
stage = MinhashDedupSignature(output_folder=out_dir, config=config)
docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
stage.get_signature(stage.get_shingles(texts[0]))  # warm-up: tokenizer load
t0 = time.perf_counter()
stage.run(iter(docs), rank=0, world_size=1)
dt = time.perf_counter() - t0
print(json.dumps({"docs": len(docs), "seconds": dt, "docs_per_s": len(docs) / dt}))
