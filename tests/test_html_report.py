"""``evaluate --html``: the self-contained HTML report, its parts, and the page in a real headless
browser (skipped, with the reason, where no Chromium or no Playwright is installed)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnmel_cli.config import PreprocessConfig
from attnmel_cli.data.id_set import encode_ids
from attnmel_cli.errors import CheckpointError
from attnmel_cli.evaluation.gallery import SECTIONS, pick
from attnmel_cli.evaluation.html_report import training_summary
from attnmel_cli.evaluation.leakage import training_overlap
from attnmel_cli.evaluation.report_figures import diagnosis_rows
from attnmel_cli.evaluation.results import EvalData, Item
from attnmel_cli.io.checkpoint import CheckpointMeta
from attnmel_cli.viz.thumbnails import MASK_COLOUR, panels

pytestmark = pytest.mark.usefixtures("restore_logging")

FAST = ["--bootstrap", "20", "--workers", "0", "--device", "cpu"]
GALLERY = 3
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


class _Page(HTMLParser):
    """What the tests look at in the report: pictures, links, the CSP, gallery cards and the rows
    of the all-images table."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.urls: list[str] = []  # every href/src/action
        self.csp = ""
        self.cards: list[tuple[str, str]] = []  # (section key, image id)
        self.rows: list[list[str]] = []
        self._in_table = self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.urls += [a[k] for k in ("href", "src", "action") if k in a]
        if tag == "img":
            self.images.append(a["src"])
        elif tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
            self.csp = a["content"]
        elif tag == "figure":
            self.cards.append((a["class"].split()[1], a["data-image"]))
        elif tag == "table" and a.get("id") == "all-images":
            self._in_table = True
        elif self._in_table and tag == "tbody":
            self.rows = []  # the header row has no cells
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag == "td":
            self._in_cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell and data.strip():
            self.rows[-1][-1] += data.strip()


@pytest.fixture(scope="module")
def report_dir(prepared: Path, tiny_checkpoint: Path, tiny_gap_checkpoint: Path, invoke,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``evaluate --out DIR --html FILE`` of two tiny checkpoints on 16 real ISIC 2017 validation
    images with their lesion masks (DIR also holds FILE)."""
    out = tmp_path_factory.mktemp("html")
    result = invoke("evaluate", "--data", prepared, "--split", "val", "-c", tiny_checkpoint,
                    "--compare", tiny_gap_checkpoint, "--out", out / "eval", "--html",
                    out / "report.html", "--gallery", str(GALLERY), *FAST)
    assert result.exit_code == 0, result.output
    shutil.copy(out / "report.html", out / "eval" / "given.html")
    return out / "eval"


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_report_is_self_contained_and_shows_the_evaluation(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert (report_dir / "given.html").read_text(encoding="utf-8") == html
    page = _parse(report_dir / "report.html")
    assert "default-src 'none'" in page.csp
    assert page.urls and all(u.startswith(("data:", "#")) for u in page.urls), page.urls
    report = json.loads((report_dir / "report.json").read_text())
    first, gap = report["checkpoints"]
    for needle in (first["name"], gap["name"], "DeLong", f"{first['roc_auc']['value']:.3f}",
                   f"{report['comparisons'][0]['p_value']:.4f}", "Per diagnosis"):
        assert needle in html
    assert "trained on" not in html  # tiny checkpoints name no training data
    with (report_dir / "predictions.csv").open(newline="") as fh:
        predictions = [r for r in csv.DictReader(fh) if r["checkpoint"] == first["name"]]
    # every image once, in input order, with the score of predictions.csv
    assert [r[1] for r in page.rows] == [r["image_id"] for r in predictions]
    assert [r[4] for r in page.rows] == [f"{float(r['p_melanoma']):.4f}" for r in predictions]
    assert all(r[3] in ("melanoma", "nevus", "seborrheic_keratosis") for r in page.rows)

    # the gallery: the first checkpoint's calls at its threshold, capped, in each section's order
    p = {r["image_id"]: float(r["p_melanoma"]) for r in predictions}
    label = {r["image_id"]: int(r["label"]) for r in predictions}
    t = first["threshold"]["value"]
    for section in SECTIONS:
        shown = [image_id for key, image_id in page.cards if key == section.key]
        expected = sorted((i for i in p if label[i] == section.label
                           and (p[i] >= t) == section.called),
                          key=lambda i: -p[i] if section.highest_first else p[i])[:GALLERY]
        assert shown == expected, section.key
    n_pictures = 1 + 2  # photo, pool-3, pool-4
    assert len(page.images) == 3 + 2 + 1 + len(page.cards) * n_pictures  # curves, histograms,
    # diagnosis chart, gallery


def test_html_output_is_not_overwritten_silently(report_dir: Path, prepared: Path,
                                                 tiny_checkpoint: Path, invoke) -> None:
    target = report_dir.parent / "report.html"
    before = target.stat().st_mtime_ns
    result = invoke("evaluate", "--data", prepared, "--split", "val", "-c", tiny_checkpoint,
                    "--html", target, *FAST)
    assert result.exit_code == 1 and "already exists" in result.stderr
    assert target.stat().st_mtime_ns == before


def test_gallery_pick_orders_each_section() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probs = np.round(rng.random(200), 2)  # ties: input order decides
    for section in SECTIONS:
        got = pick(labels, probs, 0.4, section, 7).tolist()
        pool = [i for i in range(200)
                if labels[i] == section.label and (probs[i] >= 0.4) == section.called]
        pool.sort(key=lambda i: (-probs[i] if section.highest_first else probs[i], i))
        assert got == pool[:7]


def test_warns_only_of_a_checkpoint_trained_on_the_evaluated_images() -> None:
    items = [Item(f"ISIC_{i:07d}", Path(f"{i}.png"), i % 2) for i in range(10)]
    val = EvalData(Path("prepared"), "val", items, prepared=True)
    meta = CheckpointMeta(data_fingerprint="f1", train_config={"train_splits": "train,val"})

    def trained(m: CheckpointMeta, data: EvalData = val, fp: str | None = "f1") -> int:
        o = training_overlap(m, data, fp)
        assert o.trained_on_evaluated_images == (o.images > 0) and o.of == 10
        return o.images

    assert trained(meta) == 10  # this prepared dir, a split it trained on
    assert not trained(meta, fp="f2")  # other prepared data
    assert not trained(meta, fp=None)  # data never prepared: no fingerprint
    assert not training_overlap(meta, val, None).known  # and no ids: unknown
    assert not trained(replace(meta, train_config={"train_splits": "train"}))
    assert trained(replace(meta, train_config={"folds": 3})) == 10  # pooled
    assert not trained(replace(meta, train_config={"folds": 3}),
                       EvalData(Path("prepared"), "test", items, prepared=True))
    # the image ids it records decide, whatever the data: here 4 of the 10, on data never prepared
    ids = replace(meta, data_fingerprint="other",
                  train_image_ids=encode_ids([f"ISIC_{i:07d}" for i in range(4, 30, 2)]))
    assert trained(ids, fp=None) == 3 and trained(ids) == 3
    with pytest.raises(CheckpointError, match="train_image_ids"):
        trained(replace(meta, train_image_ids="sha256/4:not base64!"))


def test_training_summary_reads_as_words() -> None:
    assert training_summary({"train_splits": "train,val", "folds": 0, "fold": 0, "epochs": 4}) \
        == "splits train,val, epochs 4"
    assert training_summary({"train_splits": "train", "folds": 3, "fold": 1}) \
        == "fold 1 of 3 held out (train + val pooled)"
    assert training_summary({}) == "—"


def test_diagnosis_rows_count_each_diagnosis() -> None:
    diagnoses = ["nevus", "melanoma", "nevus", "sk", "nevus", "melanoma"]
    probs = np.array([0.1, 0.9, 0.7, 0.2, 0.5, 0.4])
    rows = diagnosis_rows(diagnoses, probs, 0.5)
    assert [(r.diagnosis, r.n_images, r.called_melanoma) for r in rows] == [
        ("nevus", 3, 2), ("melanoma", 2, 1), ("sk", 1, 0)]
    assert rows[0].mean_p == pytest.approx(np.mean([0.1, 0.7, 0.5]))
    assert rows[1].rate == 0.5


def test_thumbnail_panels_outline_the_lesion_mask(make_photo, tmp_path: Path) -> None:
    photo = make_photo(tmp_path / "p.jpg", 3)  # 80×72
    pre = PreprocessConfig(image_size=64)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 24:44] = True
    maps = {"cam": np.random.default_rng(0).random((2, 2)).astype(np.float32)}
    got = panels(str(photo), maps, pre, mask, side=40)
    assert [label for label, _ in got] == ["photo", "CAM (melanoma)"]
    for _, img in got:
        assert max(img.size) == 40
        rgb = np.asarray(img).astype(int)
        near = np.abs(rgb - np.array(MASK_COLOUR)).sum(axis=2) < 120
        assert near.any() and near.mean() < 0.3  # a line, not a fill
    plain = panels(str(photo), {}, pre, None, side=200)
    assert len(plain) == 1 and plain[0][1].size == Image.open(photo).size  # never enlarged


# --- in a real browser -----------------------------------------------------------------------


def _browser() -> str:
    """A Chromium executable, or skip saying how to get one."""
    found = os.environ.get("ATTNMEL_CHROMIUM") or next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
         if shutil.which(n)), None)
    if not found:
        pytest.skip("no Chromium found (install Debian's chromium package, or set "
                    "ATTNMEL_CHROMIUM to a Chromium/Chrome executable)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright package is missing (pip install -e '.[test]')")
    return found


def test_report_in_headless_chromium(report_dir: Path) -> None:
    executable = _browser()
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: problems.append(f"request: {r.url}")
                    if not r.url.startswith(("data:", "file:")) else None)
            page.goto((report_dir / "report.html").as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images, i => [i.alt, i.complete, i.naturalWidth])")
            assert images and all(done and width > 0 for _, done, width in images), images
            assert page.locator("figure.card img").count() > 0

            column = "#all-images tbody tr td:nth-child({})"
            n = page.locator("#all-images tbody tr").count()
            header = page.locator("#all-images th", has_text="p(melanoma)").first
            header.click()
            up = [float(v) for v in page.locator(column.format(5)).all_inner_texts()]
            assert len(up) == n and up == sorted(up)
            assert header.get_attribute("aria-sort") == "ascending"
            header.click()
            down = [float(v) for v in page.locator(column.format(5)).all_inner_texts()]
            assert down == sorted(up, reverse=True)
            page.locator("#all-images th", has_text="#").first.click()
            order = [int(v) for v in page.locator(column.format(1)).all_inner_texts()]
            assert order == list(range(1, n + 1))
        finally:
            browser.close()
    assert not problems, problems
