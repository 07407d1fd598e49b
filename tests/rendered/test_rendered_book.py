"""The rendered book, opened page by page in headless Chromium (``make test-book`` runs this after
building ``_build/html``; ``make test-unit`` does not collect it).

Every page: no console errors, every image loaded, every formula typeset by MathJax (served from
the book itself, so all of this works offline). Chapter pages: the Colab and download buttons are
there and point at a notebook that exists in the repository, and both kinds of dropdown
(collapsed solution code, self-check answers) open when clicked. Search finds a chapter.
A screenshot of every page is saved under ``_build/screenshots/`` for review.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

selenium = pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

if not (HTML / "index.html").is_file():
    pytest.fail("build the book first: _build/html/index.html is missing", pytrace=False)
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("Chromium and chromedriver are not installed (make browser installs them as root)",
                allow_module_level=True)


def toc_pages() -> list[str]:
    def files(node):
        if isinstance(node, dict):
            return [v for k, v in node.items() if k in ("root", "file")] + [f for v in node.values() for f in files(v)]
        if isinstance(node, list):
            return [f for item in node for f in files(item)]
        return []

    return files(yaml.safe_load((ROOT / "_toc.yml").read_text()))


PAGES = toc_pages()
CHAPTERS = [p for p in PAGES if re.search(r"/0[1-9]_", p)]
# The page that applies the chapters' tools to the reader's own run has no exercises, so no
# solutions to hide; it has its own rule at the end of this file.
RECONCILE_PAGE = "book/06_reconcile_your_run"
ARTICLES = [p for p in CHAPTERS if p != RECONCILE_PAGE]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output readable
        pass


@pytest.fixture(scope="module")
def site():
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, url: str) -> None:
    driver.get(url)
    deadline = time.time() + 30
    while driver.execute_script("return document.readyState") != "complete":
        assert time.time() < deadline, f"{url} did not finish loading"
        time.sleep(0.1)
    # Wait until MathJax (if the page loads it) has typeset every formula.
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "if (!document.querySelector('script[src*=\"mathjax\"]')) { done(null); return; }"
        "const wait = () => (window.MathJax && MathJax.startup && MathJax.startup.promise)"
        "  ? MathJax.startup.promise.then(() => done(null), e => done(String(e)))"
        "  : setTimeout(wait, 50);"
        "wait();"
    )


def html_path(page: str) -> str:
    return f"{page}.html"


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_cleanly(browser, site, page):
    open_page(browser, f"{site}/{html_path(page)}")
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"console errors on {page}: {errors}"
    broken = browser.execute_script(
        "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    assert not broken, f"images that did not load on {page}: {broken}"
    formulas = browser.execute_script("return document.querySelectorAll('div.math, span.math').length")
    typeset = browser.execute_script("return document.querySelectorAll('mjx-container').length")
    assert typeset >= formulas, f"{page}: {formulas} formulas, only {typeset} typeset by MathJax"
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / f"{page.replace('/', '__')}.png"))


def test_chapters_have_math_and_figures(browser, site):
    counts = {}
    for page in CHAPTERS:
        open_page(browser, f"{site}/{html_path(page)}")
        counts[page] = browser.execute_script(
            "return [document.querySelectorAll('mjx-container').length, document.images.length]")
    assert any(math > 0 for math, _ in counts.values()), f"no chapter shows a typeset formula: {counts}"
    assert all(images > 0 for _, images in counts.values()), f"a chapter has no figure: {counts}"


@pytest.mark.parametrize("page", CHAPTERS)
def test_chapter_has_colab_and_download_buttons_to_real_notebooks(browser, site, page):
    open_page(browser, f"{site}/{html_path(page)}")
    repository = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    branch = CONFIG["repository"].get("branch", "main")
    colab = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a[href*='colab.research.google.com']")]
    # The launch button opens the page's Colab edition, <path_to_book>/<page>.ipynb (make editions).
    editions = CONFIG["repository"].get("path_to_book", "").strip("/")
    path = f"{editions}/{page}.ipynb" if editions else f"{page}.ipynb"
    launch = f"https://colab.research.google.com/github/{repository}/blob/{branch}/{path}"
    assert launch in colab, f"{page}: no Colab launch button to {launch}; found {colab}"
    for href in colab:
        match = re.fullmatch(rf"https://colab\.research\.google\.com/github/{re.escape(repository)}/blob/{branch}/(.+\.ipynb)", href)
        assert match, f"{page}: a Colab link outside the repository: {href}"
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", match.group(1)], cwd=ROOT, capture_output=True)
        assert tracked.returncode == 0, f"{page}: Colab link to {match.group(1)}, which git does not track"
    downloads = browser.find_elements(By.CSS_SELECTOR, "a.btn-download-source-button, button.btn-download-source-button")
    assert downloads, f"{page}: no download button"


@pytest.mark.parametrize("page", CHAPTERS)
def test_dropdowns_open_when_clicked(browser, site, page):
    open_page(browser, f"{site}/{html_path(page)}")
    for selector in ("details.hide.above-input", "details.sd-dropdown"):
        details = browser.find_elements(By.CSS_SELECTOR, selector)
        assert details, f"{page}: no {selector} (solutions and self-check answers are collapsed dropdowns)"
        target = details[0]
        assert target.get_attribute("open") is None, f"{page}: {selector} starts open"
        summary = target.find_element(By.TAG_NAME, "summary")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", summary)
        summary.click()
        assert target.get_attribute("open") is not None, f"{page}: clicking {selector} did not open it"
        body = [e for e in target.find_elements(By.XPATH, "./*") if e.tag_name != "summary"]
        assert any(e.is_displayed() and e.text.strip() for e in body), f"{page}: {selector} opened but shows nothing"


def test_search_finds_a_chapter(browser, site):
    open_page(browser, f"{site}/search.html?q=checkpoint")
    deadline = time.time() + 30
    links = []
    while time.time() < deadline and not links:
        links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "ul.search li a")]
        time.sleep(0.2)
    assert any(re.search(r"/book/0[1-9]_\w+\.html", href or "") for href in links), f"search results: {links}"


@pytest.mark.parametrize("page", ARTICLES)
def test_solutions_stay_hidden_until_opened(browser, site, page):
    # An exercise's answer is its solution cell's output: it must not be readable under the
    # exercise before the reader asks for it, and must be readable once they do.
    open_page(browser, f"{site}/{html_path(page)}")
    solutions = [cell for cell in browser.find_elements(By.CSS_SELECTOR, "div.cell.tag_solution")
                 if cell.find_elements(By.CSS_SELECTOR, "div.cell_output")]
    assert solutions, f"{page}: no solution cell with an output"
    for cell in solutions:
        outputs = cell.find_elements(By.CSS_SELECTOR, "div.cell_output")
        assert outputs[0].text.strip() == "", f"{page}: a solution's output shows before the click"
        assert not any(o.is_displayed() for o in outputs), f"{page}: a solution's output is visible before the click"
        summary = cell.find_element(By.CSS_SELECTOR, "details > summary")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", summary)
        summary.click()
        deadline = time.time() + 5  # the theme animates the opening
        while time.time() < deadline and not outputs[0].text.strip():
            time.sleep(0.1)
        assert outputs[0].text.strip(), f"{page}: an opened solution shows no output"


def test_reconcile_page_answers_first_links_its_reports_and_hides_its_bookkeeping(browser, site):
    open_page(browser, f"{site}/{html_path(RECONCILE_PAGE)}")
    boxes = [box for box in browser.find_elements(By.CSS_SELECTOR, "div.admonition")
             if box.text.startswith("The short answer")]
    assert boxes, "no 'The short answer' box"
    first_screen = browser.execute_script("return window.innerHeight")
    top = browser.execute_script("return arguments[0].getBoundingClientRect().top", boxes[0])
    assert top < first_screen, f"the short answer starts at {top}px, below the first screen"
    report = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+/(issues|pull)/\d+")
    links = {a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a[href]")}
    reports = {href for href in links if report.fullmatch(href or "")}
    assert len(reports) >= 8, f"the casebook links {len(reports)} reports: {sorted(reports)}"
    text = browser.find_element(By.CSS_SELECTOR, "main").text
    assert "glue(" not in text, "a glue cell (remove-cell) shows on the page"


@pytest.mark.parametrize("page", ARTICLES)
def test_the_short_answer_is_on_the_first_screen(browser, site, page):
    # A reader whose browser window is 1280 x 800 sees the box's title and first line without
    # scrolling, and at 1280 x 1000 the whole box: the setup cells above it are collapsed,
    # the bookkeeping removed, and nothing but the title, the reading time, a short paragraph
    # and the reproduction come first.
    def short_answer():
        boxes = [box for box in browser.find_elements(By.CSS_SELECTOR, "div.admonition")
                 if box.text.startswith("The short answer")]
        assert boxes, f"{page}: no 'The short answer' box"
        rect = "const r = arguments[0].getBoundingClientRect(); return [r.top, r.bottom]"
        return browser.execute_script(rect, boxes[0]), browser.execute_script("return innerHeight")

    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        browser.set_window_size(1280, 800)
        open_page(browser, f"{site}/{html_path(page)}")
        browser.save_screenshot(str(SHOTS / f"first-screen__{page.replace('/', '__')}.png"))
        (top, _), screen = short_answer()
        assert top + 50 <= screen, f"{page}: at 1280x800 the short answer starts at {top:.0f}px of {screen}"
        browser.set_window_size(1280, 1000)
        open_page(browser, f"{site}/{html_path(page)}")
        (_, bottom), screen = short_answer()
        assert bottom <= screen, f"{page}: at 1280x1000 the short answer ends at {bottom:.0f}px of {screen}"
    finally:
        browser.set_window_size(1280, 1000)


def test_the_field_guide_fits_the_page_and_shows_every_proof_link(browser, site):
    # One section per entry (each with its own address), not a five-column table that ran
    # off the page at 1280 px and hid the proof links.
    open_page(browser, f"{site}/{html_path('book/field_guide')}")
    article = browser.find_element(By.CSS_SELECTOR, "article.bd-article")
    overflow = browser.execute_script("return arguments[0].scrollWidth - arguments[0].clientWidth",
                                      article)
    assert overflow <= 0, f"the field guide is {overflow}px wider than its column"
    right = browser.execute_script("return arguments[0].getBoundingClientRect().right", article)
    entries = browser.find_elements(By.CSS_SELECTOR, "#the-pairs > section")
    assert len(entries) >= 18, f"{len(entries)} entries"
    for entry in entries:
        proof = [p for p in entry.find_elements(By.TAG_NAME, "p") if p.text.startswith("Proof:")]
        links = [a for p in proof for a in p.find_elements(By.TAG_NAME, "a")
                 if re.search(r"/0[1-6]_\w+\.html#", a.get_attribute("href") or "")]
        assert links, f"an entry without a link to its proof: {entry.text[:60]!r}"
        for link in links:
            box = browser.execute_script("return arguments[0].getBoundingClientRect().right", link)
            assert link.is_displayed() and box <= right, f"a proof link off the page: {link.text}"


# What runs past its column at 1280 px: a code block or output that scrolls sideways (its
# scrollWidth beyond its clientWidth), a table, a formula or an image whose right edge passes
# the article's. Collapsed cells (setup code, solutions) are opened first: their 88 columns
# must fit as well as the others'.
OVERFLOW = """
const article = document.querySelector('article.bd-article');
document.querySelectorAll('details').forEach(d => { d.open = true; });
const edge = article.getBoundingClientRect().right;
const found = [];
const where = el => (el.textContent || el.getAttribute('src') || '').trim().slice(0, 50);
for (const el of article.querySelectorAll('pre')) {
  const over = el.scrollWidth - el.clientWidth;
  if (over > 0) found.push(`code block ${over}px too wide: ${where(el)}`);
}
for (const el of article.querySelectorAll('mjx-container[display="true"]')) {
  const over = el.scrollWidth - el.clientWidth;  // MathJax clips a wide display formula
  if (over > 1) found.push(`formula ${over}px too wide: ${where(el.parentElement)}`);
}
for (const el of article.querySelectorAll('table, mjx-container, img, dl')) {
  const over = Math.round(el.getBoundingClientRect().right - edge);
  if (over > 0) found.push(`${el.tagName.toLowerCase()} ${over}px past the column: ${where(el)}`);
}
const page = article.scrollWidth - article.clientWidth;
if (page > 0) found.push(`the article scrolls sideways by ${page}px`);
return found;
"""


@pytest.mark.parametrize("page", PAGES)
def test_nothing_runs_off_the_page_at_1280_px(browser, site, page):
    try:
        browser.set_window_size(1280, 1000)
        open_page(browser, f"{site}/{html_path(page)}")
        time.sleep(0.3)  # the theme animates opened details
        found = browser.execute_script(OVERFLOW)
    finally:
        browser.set_window_size(1280, 1000)
    assert not found, f"{page} at 1280 px:\n" + "\n".join(found)


def test_every_field_guide_entry_has_its_own_address(browser, site):
    # A reader can link to one entry: each is a section with an id, and the link lands on it.
    open_page(browser, f"{site}/{html_path('book/field_guide')}")
    ids = browser.execute_script(
        "return [...document.querySelectorAll('#the-pairs > section')].map(s => s.id)")
    assert len(ids) >= 18 and len(set(ids)) == len(ids) and all(ids), ids
    for wanted in ("val-loss-lower-than-loss", "an-accumulated-loss-k-times-larger"):
        assert wanted in ids, f"no entry #{wanted}: {ids}"
    open_page(browser, f"{site}/{html_path('book/field_guide')}#{ids[-1]}")
    top = browser.execute_script(
        "return document.getElementById(arguments[0]).getBoundingClientRect().top", ids[-1])
    assert 0 <= top < 200, f"the link to #{ids[-1]} does not land on it (top at {top}px)"
