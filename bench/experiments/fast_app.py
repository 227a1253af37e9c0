"""gunicorn entry point for the experiments: FastHitMiddleware over an engine COPY.

Environment: HUIMAGES_DATA_DIR (as huimages), and optionally
BENCH_DRAFT_GAP, BENCH_REDUCING_GAP ("none" allowed), BENCH_RESAMPLE (LANCZOS,
BICUBIC, ...) for bench/experiments/engine_copy.py, BENCH_WSGI (fast | lean).
"""

import os

from PIL import Image

from bench.experiments.engine_copy import ImageEngine
from bench.experiments.wsgi_fast import make_app
from huimages_wsgi.config import Config
from huimages_wsgi.store import ImageStore

_config = Config.from_env()
_rg = os.environ.get("BENCH_REDUCING_GAP", "2.0")
_engine = ImageEngine(
    _config.jpeg_quality,
    _config.max_pixels,
    draft_gap=float(os.environ.get("BENCH_DRAFT_GAP", "2.0")),
    reducing_gap=None if _rg.lower() == "none" else float(_rg),
    resample=Image.Resampling[os.environ.get("BENCH_RESAMPLE", "LANCZOS")],
)
app = make_app(store=ImageStore(_config, engine=_engine), kind=os.environ.get("BENCH_WSGI", "fast"))
