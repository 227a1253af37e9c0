"""N concurrent requests for one uncached variant decode the original once."""

import multiprocessing
import threading
from pathlib import Path

from webob import Request

from huimages_wsgi import Config, ImageStore, make_app
from huimages_wsgi.imaging.engine import ImageEngine

from .. import imagefactory as f


class CountingEngine(ImageEngine):
    """Appends one line per render to a file shared by every process."""

    def __init__(self, tally: Path) -> None:
        super().__init__()
        self.tally = tally

    def render(self, *args, **kwargs):
        with open(self.tally, "a") as out:
            out.write("decode\n")
        return super().render(*args, **kwargs)


def _request(data_dir: str, tally: str, url: str, results) -> None:
    config = Config(data_dir=Path(data_dir))
    store = ImageStore(config, engine=CountingEngine(Path(tally)))
    app = make_app(store=store)
    results.put(Request.blank(url).get_response(app).status_int)


def test_threads_decode_once(tmp_path):
    tally = tmp_path / "tally"
    config = Config(data_dir=tmp_path / "data")
    store = ImageStore(config, engine=CountingEngine(tally))
    imageid = store.save_image(f.photo_jpeg(2000, 1500))
    app = make_app(store=store)
    statuses = []
    threads = [
        threading.Thread(target=lambda: statuses.append(
            Request.blank(f"/300x300/{imageid}.jpeg").get_response(app).status_int))
        for _ in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 12
    assert tally.read_text().count("decode") == 1


def test_processes_decode_once(tmp_path):
    tally = tmp_path / "tally"
    data_dir = tmp_path / "data"
    imageid = ImageStore(Config(data_dir=data_dir)).save_image(f.photo_jpeg(2400, 1800))
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [
        context.Process(target=_request,
                        args=(str(data_dir), str(tally), f"/75x75!/{imageid}.jpeg", results))
        for _ in range(6)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert sorted(results.get(timeout=5) for _ in workers) == [200] * 6
    assert tally.read_text().count("decode") == 1
