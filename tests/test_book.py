"""The book's conventions, checked on the files themselves (no notebook is executed here).

- every chapter is a jupytext pair, book/NN_name.md (the source) and book/NN_name.ipynb (executed),
  with identical cells;
- every notebook's first code cell is the setup cell, with its output hidden, importing the
  companion (the Colab editions install it from the one repository URL in _config.yml);
- stored outputs are complete and clean (executed top to bottom, no errors, no warnings);
- the table of contents and the configuration point at what exists.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

# The rule the chapters' reading time follows: words and code lines on the page before
# "## Exercises", read at a learner's pace, 150 words and 6 code lines a minute
# (tests/test_glue.py checks the rule on a chapter counted by hand).
from companion.glue import OFF_PAGE, core_size, exact_minutes, reading_minutes

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
REPOSITORY_URL = CONFIG["repository"]["url"]

NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
CHAPTER_SOURCES = sorted(BOOK.glob("[0-9][0-9]_*.md"))
# A chapter's setup cell shows no source (remove-input: the chapter's one "Show the setup code"
# bar is the imports cell's); the setup check page shows it, its output hidden.
SETUP_TAGS = {"hide-output", "remove-output", "hide-cell", "remove-input"}


def notebook_ids(paths):
    return [p.name for p in paths]


def cells(path: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    """What must agree between the two files of a pair: type, source and tags of every cell."""
    notebook = jupytext.read(path)
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", ()))) for c in notebook.cells]


def code_cells(path: Path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_the_book_has_notebooks():
    assert NOTEBOOKS, "no book/*.ipynb found"


# --- jupytext pairs ----------------------------------------------------------------------------


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=notebook_ids(NOTEBOOKS))
def test_notebook_has_an_identical_md_twin(notebook):
    source = notebook.with_suffix(".md")
    assert source.is_file(), f"{notebook.name} has no {source.name}: create it with jupytext, edit the .md"
    md_cells, ipynb_cells = cells(source), cells(notebook)
    assert len(md_cells) == len(ipynb_cells), f"{source.name}: {len(md_cells)} cells, {notebook.name}: {len(ipynb_cells)}"
    for index, (md_cell, ipynb_cell) in enumerate(zip(md_cells, ipynb_cells)):
        assert md_cell == ipynb_cell, f"cell {index} differs between {source.name} and {notebook.name}; run `make sync`"


@pytest.mark.parametrize("source", CHAPTER_SOURCES, ids=notebook_ids(CHAPTER_SOURCES))
def test_chapter_source_has_an_ipynb_twin(source):
    assert source.with_suffix(".ipynb").is_file(), f"{source.name} was never synced: run `make sync NB={source.relative_to(ROOT)}`"
    front_matter = jupytext.read(source).metadata
    assert front_matter["jupytext"]["formats"] == "ipynb,md:myst"
    assert front_matter["kernelspec"]["name"] == "python3"


# --- the setup cell ----------------------------------------------------------------------------


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=notebook_ids(NOTEBOOKS))
def test_first_code_cell_is_the_setup_cell(notebook):
    # The book's setup cell only imports and seeds: the install on Colab belongs to the
    # generated Colab edition (tools/make_editions.py), so the repository's URL is written in
    # _config.yml alone.
    first = code_cells(notebook)[0]
    source = first.source
    assert SETUP_TAGS & set(first.metadata.get("tags", ())), "the setup cell's output is hidden"
    if "remove-input" in first.metadata.get("tags", ()):
        assert not first.outputs, "a setup cell without its source on the page prints nothing"
    assert "import companion" in source and "companion.seed_everything(" in source
    assert not re.search(r"https?://|pip|subprocess|REPOSITORY", source), (
        "no URL and no install in a chapter: the Colab edition's generated cell installs")
    assert not re.search(r"tensorflow|keras|torch", source), "Colab has the frameworks"


def test_the_repository_url_is_written_in_one_place():
    # _config.yml names it; every other file that needs it is generated from it (colab/), rewritten
    # with it by `make editions REPOSITORY=...` (CITATION.cff, checked against it in
    # test_editions) or reads it from the configuration (book/_ext/course_colab.py, the tests).
    hand_edited = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split()
    naming = [path for path in hand_edited
              if not path.startswith("colab/") and path not in ("_config.yml", "CITATION.cff")
              and (ROOT / path).is_file()
              and REPOSITORY_URL.removeprefix("https://") in (ROOT / path).read_text(errors="ignore")]
    assert naming == [], f"the repository URL is typed in {naming}; derive it from _config.yml"


def test_the_repository_url_is_well_formed():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPOSITORY_URL), REPOSITORY_URL


# --- stored outputs ----------------------------------------------------------------------------

WARNING_TEXT = re.compile(r"\b\w*Warning\b|\bWARNING\b|^W\d{4} ", re.MULTILINE)


def output_text(output) -> str:
    if output.output_type == "stream":
        return output.text
    return "\n".join(v for k, v in output.get("data", {}).items() if k.startswith("text/") and isinstance(v, str))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=notebook_ids(NOTEBOOKS))
def test_notebook_was_executed_top_to_bottom_in_one_run(notebook):
    counts = [c.execution_count for c in code_cells(notebook)]
    assert counts == list(range(1, len(counts) + 1)), f"execution counts {counts}: run `make sync`"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=notebook_ids(NOTEBOOKS))
def test_stored_outputs_are_free_of_errors_and_warnings(notebook):
    for index, cell in enumerate(code_cells(notebook)):
        for output in cell.outputs:
            where = f"{notebook.name}, code cell {index}"
            assert output.output_type != "error", f"{where}: stored error {output.get('ename')}"
            assert not (output.output_type == "stream" and output.name == "stderr"), (
                f"{where}: stderr in the stored output: {output.text[:200]!r}"
            )
            match = WARNING_TEXT.search(output_text(output))
            assert not match, f"{where}: warning in the stored output: {match.group(0)!r}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=notebook_ids(NOTEBOOKS))
def test_every_glued_name_in_the_text_is_glued_by_the_code(notebook):
    notebook_cells = nbformat.read(notebook, as_version=4).cells
    text = "\n".join(c.source for c in notebook_cells if c.cell_type == "markdown")
    used = set(re.findall(r"\{glue(?::\w+)?\}`([\w-]+)", text))
    glued = {
        o.metadata["scrapbook"]["name"]
        for c in notebook_cells
        if c.cell_type == "code"
        for o in c.outputs
        if "scrapbook" in o.get("metadata", {})
    }
    assert used <= glued, f"the text uses {sorted(used - glued)}, which no stored output glues"


# --- table of contents and configuration -------------------------------------------------------


def toc_files(node) -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("root", "file"):
                found.append(value)
            else:
                found += toc_files(value)
    elif isinstance(node, list):
        for item in node:
            found += toc_files(item)
    return found


def test_the_footer_names_this_years_copyright_not_the_default():
    # Jupyter Book prints "© Copyright 2023" unless _config.yml says otherwise.
    assert str(CONFIG.get("copyright")) == "2026", CONFIG.get("copyright")


def test_toc_entries_exist():
    entries = toc_files(TOC)
    assert entries[0] == "book/intro"
    for entry in entries:
        candidates = [ROOT / entry] + [ROOT / f"{entry}{suffix}" for suffix in (".md", ".ipynb")]
        assert any(p.is_file() for p in candidates), f"_toc.yml lists {entry}, which does not exist"


def test_every_notebook_is_in_the_toc():
    # only_build_toc_files: a notebook missing from _toc.yml would silently be left out of the book.
    listed = {entry.removesuffix(".ipynb") for entry in toc_files(TOC)}
    missing = [nb.name for nb in NOTEBOOKS if str(nb.relative_to(ROOT).with_suffix("")) not in listed]
    assert not missing, f"not in _toc.yml: {missing}"


def test_the_book_renders_stored_outputs_only():
    assert CONFIG["execute"]["execute_notebooks"] == "off"
    assert CONFIG["only_build_toc_files"] is True
    assert "book/[0-9][0-9]_*.md" in CONFIG["exclude_patterns"], "the .md twins must not be built as pages too"


# --- every chapter keeps the same teaching structure ------------------------------------------

REQUIRED_SECTIONS = ("Overview", "The article's claims, tested",
                     "What to do about it", "Summary", "Exercises", "Self-check")
# The article chapters follow the investigation template; the page that applies their tools to
# the reader's own run has a structure of its own (see the end of this file).
RECONCILE_PAGE = BOOK / "06_reconcile_your_run.ipynb"
CHAPTERS = [nb for nb in NOTEBOOKS if re.match(r"0[1-9]_", nb.name) and nb != RECONCILE_PAGE]


def sections(notebook_cells) -> dict[str, str]:
    """The markdown under each `## ` heading (up to the next one), code cells as placeholders."""
    found, current = {}, None
    for cell in notebook_cells:
        for line in cell.source.splitlines() if cell.cell_type == "markdown" else ["<code>"]:
            heading = re.match(r"## (.+)", line)
            if heading:
                current = heading.group(1).strip()
                found[current] = ""
            elif current is not None:
                found[current] += line + "\n"
    return found


@pytest.mark.parametrize("notebook", CHAPTERS, ids=notebook_ids(CHAPTERS))
def test_chapter_has_the_course_structure(notebook):
    notebook_cells = nbformat.read(notebook, as_version=4).cells
    found = sections(notebook_cells)
    missing = [s for s in REQUIRED_SECTIONS if s not in found]
    assert not missing, f"{notebook.name} lacks the sections {missing}"
    assert "By the end of this chapter you will be able to" in found["Overview"]
    assert found["Overview"].count("\n- ") >= 3, "at least three learning objectives, as a bullet list"
    assert "|---" in found["Summary"] or "| ---" in found["Summary"], "the summary is a table"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=notebook_ids(CHAPTERS))
def test_every_claim_has_a_verdict_and_a_check(notebook):
    notebook_cells = nbformat.read(notebook, as_version=4).cells
    claims = sections(notebook_cells)["The article's claims, tested"]
    subsections = re.split(r"^### ", claims, flags=re.MULTILINE)[1:]
    assert len(subsections) >= 2, "each claim gets a ### subsection"
    for body in subsections:
        title = body.splitlines()[0]
        assert re.search(r"\*\*Verdict: (holds|partly holds|does not hold)\b", body), f"claim {title!r} has no verdict"
        assert "<code>" in body, f"claim {title!r} has no experiment"
    all_code = "\n".join(c.source for c in notebook_cells if c.cell_type == "code")
    assert len(re.findall(r"^\s*(assert |np\.testing\.assert|torch\.testing\.assert)", all_code, re.MULTILINE)) >= len(subsections)


@pytest.mark.parametrize("notebook", CHAPTERS, ids=notebook_ids(CHAPTERS))
def test_exercises_have_executed_solutions_and_self_check_has_answers(notebook):
    notebook_cells = nbformat.read(notebook, as_version=4).cells
    found = sections(notebook_cells)
    exercises = re.findall(r"```\{admonition\} Exercise \d+", found["Exercises"])
    assert len(exercises) >= 3, "at least three exercises"
    solutions = [c for c in notebook_cells if c.cell_type == "code" and "solution" in c.metadata.get("tags", ())]
    assert len(solutions) >= len(exercises), "every exercise is followed by a solution cell tagged 'solution'"
    for cell in solutions:
        assert "hide-cell" in cell.metadata.get("tags", ()), (
            "a solution's code and output stay collapsed (hide-cell) until the reader opens them")
        assert cell.execution_count is not None and re.search(r"assert|np\.testing", cell.source), (
            "a solution is executed and checks its own answer"
        )
    dropdowns = re.findall(r"^(?:```|:::)\{dropdown\}(.*)$", found["Self-check"], re.MULTILINE)
    assert len(dropdowns) >= 3, "at least three self-check questions"
    # A backtick fence's title may not contain backticks (CommonMark), or the dropdown is
    # silently printed as text: use a ::: fence for titles with code in them.
    assert not any("`" in title for title in re.findall(r"^```\{dropdown\}(.*)$", found["Self-check"], re.MULTILINE))


def test_chapter_1_shows_both_reference_loops_whole():
    # The book promises "a short loop you can read": each train() is printed whole, with no
    # line cut, and fits in one sitting (at most 60 lines besides its docstring, 88 columns).
    import ast
    import inspect

    pytest.importorskip("torch")
    pytest.importorskip("keras")
    from companion import tf_loop, torch_loop

    shown = "\n".join(
        "".join(output.get("data", {}).get("text/markdown", ""))
        for cell in nbformat.read(BOOK / "01_loss_vs_metric.ipynb", as_version=4).cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    for module in (tf_loop, torch_loop):
        source = inspect.getsource(module.train)
        assert source in shown, f"chapter 1 does not show {module.__name__}.train as it is now"
        function = ast.parse(source).body[0]
        docstring = function.body[0]
        lines = len(source.splitlines()) - (docstring.end_lineno - docstring.lineno + 1)
        assert lines <= 60, f"{module.__name__}.train has {lines} lines besides its docstring"
        widest = max(len(line) for line in source.splitlines())
        assert widest <= 88, f"{module.__name__}.train has a line of {widest} characters"


# --- the page "Reconcile your own run": the tool, the chapters in miniature, a casebook ----------

RECONCILE_SECTIONS = ("Setup", "The tool on a fresh model", "The five chapters in miniature",
                      "Casebook: real reports, reconciled", "Paste your run", "Self-check")
# The public reports the casebook must re-create (issues 17 and 22), as https://github.com/<these>.
CASEBOOK_REPORTS = {
    "tensorflow/tensorflow/issues/29964", "keras-team/keras/issues/20388",
    "tensorflow/tensorflow/issues/25178", "keras-team/keras/issues/18796",
    "mlcommons/training/issues/89", "huggingface/trl/issues/2175",
    "huggingface/transformers/pull/34191", "pytorch/pytorch/issues/25162",
    "keras-team/keras/issues/3326", "keras-team/keras-cv/pull/923",
    "pytorch/pytorch/issues/130342", "pytorch/xla/pull/2425",
    "tensorflow/tensorflow/issues/40002", "Lightning-AI/pytorch-lightning/issues/11601",
    "tensorflow/tensorflow/issues/41413", "Lightning-AI/pytorch-lightning/issues/12354",
    "Lightning-AI/torchmetrics/issues/597", "tensorflow/tensorflow/issues/3103",
}
MIN_CASES = 15
REPORT_LINK = re.compile(r"\(https://github\.com/([\w.-]+/[\w.-]+/(?:issues|pull)/\d+)\)")


def subsections(notebook_cells, section: str) -> list[tuple[str, str, list]]:
    """The `### ` parts of a `## ` section: (title, their markdown, their code cells)."""
    parts, inside = [], False
    for cell in notebook_cells:
        if cell.cell_type == "code":
            if inside and parts:
                parts[-1][2].append(cell)
            continue
        for line in cell.source.splitlines() + [""]:  # a cell ends a paragraph
            if line.startswith("## "):
                inside = line[3:].strip() == section
            elif inside and line.startswith("### "):
                parts.append((line[4:].strip(), "", []))
            elif inside and parts:
                title, text, code = parts[-1]
                parts[-1] = (title, text + line + "\n", code)
    return parts


def stdout(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream")


def test_reconcile_page_puts_the_answer_first_then_demo_casebook_recipe():
    notebook_cells = nbformat.read(RECONCILE_PAGE, as_version=4).cells
    found = sections(notebook_cells)
    assert tuple(found) == RECONCILE_SECTIONS, f"sections {tuple(found)}"
    before_setup = "\n".join(c.source for c in notebook_cells[:3] if c.cell_type == "markdown")
    assert "```{admonition} The short answer" in before_setup, "the answer is on the first screen"
    assert "|---" in found["Paste your run"], "the recipe reads the parts from a table"
    dropdowns = re.findall(r"^:::\{dropdown\}", found["Self-check"], re.MULTILINE)
    assert len(dropdowns) >= 3, "at least three self-check questions"


def test_reconcile_page_shows_every_chapter_in_miniature():
    notebook_cells = nbformat.read(RECONCILE_PAGE, as_version=4).cells
    parts = subsections(notebook_cells, "The five chapters in miniature")
    titles = [title.split(":")[0] for title, _, _ in parts]
    assert titles == [f"Chapter {n}" for n in range(1, 6)], f"one ### per chapter, got {titles}"
    for title, _, code in parts:
        assert code and stdout(code[0]).strip(), f"{title!r}: no executed experiment"
        assert re.search(r"^assert ", code[0].source, re.MULTILINE), f"{title!r}: no check"


def test_every_casebook_case_links_its_report_recreates_it_and_checks_the_explanation():
    notebook_cells = nbformat.read(RECONCILE_PAGE, as_version=4).cells
    cases = subsections(notebook_cells, "Casebook: real reports, reconciled")
    linked = set()
    for title, text, code in cases:
        reports = REPORT_LINK.findall(text)
        assert reports, f"case {title!r} links no report"
        linked.update(reports)
        paragraphs = [p for p in text.split("\n\n") if len(p.split()) >= 40]
        assert paragraphs, f"case {title!r} says in a paragraph what the reporter saw"
        shown = [c for c in code if "remove-cell" not in c.metadata.get("tags", ())]
        assert shown and stdout(shown[0]).strip(), f"case {title!r} has no executed re-creation"
        assert re.search(r"^assert ", shown[0].source, re.MULTILINE), f"case {title!r}: no check"
        assert re.search(r"^\*\*Verdict:\*\* \S", text, re.MULTILINE), f"case {title!r}: no verdict"
    assert CASEBOOK_REPORTS <= linked, f"missing reports: {sorted(CASEBOOK_REPORTS - linked)}"
    assert len(cases) >= MIN_CASES, f"the casebook has {len(cases)} cases, at least {MIN_CASES}"


def paste_your_run_snippet(module: str) -> str:
    """The page's code block (not executed there) that imports companion.<module>."""
    text = RECONCILE_PAGE.with_suffix(".md").read_text().split("## Paste your run")[1]
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    found = [block for block in blocks if f"from companion.{module} import" in block]
    assert len(found) == 1, f"one block imports companion.{module}, found {len(found)}"
    return found[0]


@pytest.mark.lightning
def test_paste_your_run_lightning_block_runs_as_shown(tmp_path, monkeypatch, capsys):
    # The reader pastes the block under their own module and loaders: here a module that
    # logs as the page says (train_loss on_epoch in training_step, val_loss in validation_step).
    pl = pytest.importorskip("pytorch_lightning")
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(),
                                           torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            loss = torch.nn.functional.mse_loss(self(batch[0]), batch[1])
            self.log("train_loss", loss, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.nn.functional.mse_loss(self(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 3, generator=g), torch.randn(30, 1, generator=g)
    monkeypatch.chdir(tmp_path)  # Lightning writes its logs in the working folder
    namespace = {"module": Module(),
                 "train_loader": DataLoader(TensorDataset(x[:22], y[:22]), batch_size=4,
                                            shuffle=True),
                 "val_loader": DataLoader(TensorDataset(x[22:], y[22:]), batch_size=3)}
    exec(paste_your_run_snippet("lightning"), namespace)
    printed = capsys.readouterr().out
    assert "loss of epoch 2 (0-based)" in printed and "float rounding" in printed
    assert namespace["explain"].result().validation is not None, "val_loss explained too"


@pytest.mark.hf
def test_paste_your_run_trainer_block_runs_as_shown(tmp_path, capsys):
    # A tiny causal LM from a config (no download) under gradient accumulation, sequences of
    # different lengths: the case the block's sentence names.
    transformers = pytest.importorskip("transformers")
    import torch
    from test_hf import collate  # pads, labelling the padding -100

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32))
    g = torch.Generator().manual_seed(1)
    rows = [{"input_ids": torch.randint(0, 32, (int(n),), generator=g)}
            for n in torch.randint(3, 13, (12,), generator=g)]

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=3, gradient_accumulation_steps=2,
        logging_steps=1, num_train_epochs=1, learning_rate=1e-2, report_to=[], use_cpu=True,
        save_strategy="no", disable_tqdm=True, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows,
                                   data_collator=collate)
    namespace = {"trainer": trainer}
    exec(paste_your_run_snippet("hf"), namespace)
    printed = capsys.readouterr().out
    assert "float rounding" in printed, printed[-400:]
    assert len(namespace["explain"].result().epochs) == 2, "each logged loss explained"


def test_reconcile_page_shows_its_reading_time():
    from companion.glue import core_size, reading_minutes

    words, lines = core_size(RECONCILE_PAGE.with_suffix(".md"))
    expected = {"core_words": words, "core_code_lines": lines,
                "reading_minutes": reading_minutes(words, lines)}
    values = glued(RECONCILE_PAGE)
    wrong = {k: (values.get(k), v) for k, v in expected.items() if values.get(k) != str(v)}
    assert not wrong, f"glued (stored, expected) {wrong}: run `make sync`"
    title = nbformat.read(RECONCILE_PAGE, as_version=4).cells[0].source
    assert "{glue:text}`reading_minutes`" in title, "the reading time is under the title"


def test_reconcile_page_keeps_its_glue_bookkeeping_off_the_page():
    for cell in code_cells(RECONCILE_PAGE):
        if re.search(r"^glue\(", cell.source, re.MULTILINE):
            assert "remove-cell" in cell.metadata.get("tags", ()), (
                f"a cell that glues numbers for the prose is tagged remove-cell: {cell.source[:60]!r}")


def test_reconcile_page_code_and_outputs_fit_in_88_columns():
    for index, cell in enumerate(code_cells(RECONCILE_PAGE)):
        texts = [cell.source] + [output_text(o) for o in cell.outputs
                                 if "scrapbook" not in o.get("metadata", {})]
        wide = [line for text in texts for line in text.splitlines() if len(line) > 88]
        assert not wide, f"code cell {index}: lines over 88 columns: {wide}"


# --- the reader-first template (issue 14) ------------------------------------------------------
#
# Chapters rewritten to the reader-first template: the answer first, a core (everything before
# `## Exercises`) that reads in about 25 minutes, bookkeeping off the page, 88 columns. Chapter 1
# is the template; the other chapters join this list as they are rewritten.
READER_FIRST = ["01_loss_vs_metric", "02_checkpoints", "03_loss_vs_accuracy", "04_averaging_the_loss",
                "05_mse_reads_zero"]
READER_FIRST_NOTEBOOKS = [BOOK / f"{name}.ipynb" for name in READER_FIRST]

MAX_COLUMNS = 88
# A core read in one sitting: at most 50 minutes at a learner's pace (the length of a lecture;
# two careful readers took 35 to 50 minutes over these chapters), of which at most 2,000
# words of prose. What does not fit goes to "Going further".
MAX_CORE_WORDS, MAX_CORE_MINUTES = 2000, 50
SHORT_ANSWER = "```{admonition} The short answer"


def tags(cell) -> set[str]:
    return set(cell.metadata.get("tags", ()))


def count_lines(text: str) -> int:
    return len([line for line in text.splitlines() if line.strip()])


def glued(notebook: Path) -> dict[str, str]:
    return {
        o.metadata["scrapbook"]["name"]: next(iter(o.data.values()))
        for c in nbformat.read(notebook, as_version=4).cells
        if c.cell_type == "code"
        for o in c.outputs
        if "scrapbook" in o.get("metadata", {})
    }


def test_reader_first_chapters_exist():
    missing = [nb.name for nb in READER_FIRST_NOTEBOOKS if not nb.is_file()]
    assert not missing, f"READER_FIRST names chapters that do not exist: {missing}"


@pytest.mark.parametrize("notebook", READER_FIRST_NOTEBOOKS, ids=READER_FIRST)
def test_the_short_answer_comes_first(notebook):
    # The rule: the box is on the first screen, right after the reproduction. Only the title
    # (the question), the reading time and a short paragraph come before it, no section
    # heading; the only code cell on the page is the reproduction (at most 5 lines): the setup
    # cells before it are collapsed (hide-cell), the bookkeeping removed. It says its answer in at most 5 lines, with numbers
    # glued from the code.
    notebook_cells = nbformat.read(notebook, as_version=4).cells
    box = next((i for i, c in enumerate(notebook_cells)
                if c.cell_type == "markdown" and SHORT_ANSWER in c.source), None)
    assert box is not None, f"{notebook.name}: no '{SHORT_ANSWER}' box"
    before = "\n".join(c.source for c in notebook_cells[:box] if c.cell_type == "markdown")
    before += "\n" + notebook_cells[box].source.split(SHORT_ANSWER)[0]
    headings = re.findall(r"^(#{2,3}) (.+)$", before, re.MULTILINE)
    assert headings == [], (
        f"{notebook.name}: sections before the short answer: {headings}")
    shown = [c for c in notebook_cells[:box] if c.cell_type == "code" and not OFF_PAGE & tags(c)]
    assert len(shown) == 1, f"{notebook.name}: the box must follow the reproduction, found {len(shown)} code cells"
    assert count_lines(shown[0].source) <= 5, f"{notebook.name}: the reproduction has more than 5 lines"
    body = notebook_cells[box].source.split(SHORT_ANSWER)[1].split("\n```")[0]
    body_lines = [line for line in body.splitlines()[1:] if line.strip() and not line.startswith(":")]
    assert re.search(r"^:class: \w+", body, re.MULTILINE), "the box has a class (tip, important...)"
    assert len(body_lines) <= 5, f"{notebook.name}: the short answer has {len(body_lines)} lines"
    assert "{glue:text}`" in body, "the short answer's numbers are glued, not typed"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=notebook_ids(NOTEBOOKS))
def test_code_and_outputs_fit_in_88_columns(notebook):
    # Code cells' source (removed cells too) and the text of their outputs: printed streams,
    # text/plain, and text/markdown (the loops shown by show_source). Images are not text.
    wide = []
    for index, cell in enumerate(code_cells(notebook)):
        texts = [("source", cell.source)]
        for output in cell.outputs:
            if output.output_type == "stream":
                texts.append(("stream", output.text))
            for kind in ("text/plain", "text/markdown"):
                if kind in output.get("data", {}) and "scrapbook" not in output.get("metadata", {}):
                    texts.append((kind, "".join(output.data[kind])))
        for kind, text in texts:
            wide += [f"code cell {index} ({kind}), {len(line)} columns: {line[:60]}..."
                     for line in text.splitlines() if len(line) > MAX_COLUMNS]
    assert not wide, f"{notebook.name}: lines over {MAX_COLUMNS} columns:\n" + "\n".join(wide)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=notebook_ids(NOTEBOOKS))
def test_glue_calls_live_in_removed_cells(notebook):
    # The page shows the experiment and its result; the bookkeeping for the prose is off it.
    visible = [index for index, cell in enumerate(code_cells(notebook))
               if re.search(r"(?<![\w.])glue\(", cell.source) and "remove-cell" not in tags(cell)]
    assert not visible, f"{notebook.name}: glue(...) in code cells not tagged remove-cell: {visible}"


@pytest.mark.parametrize("notebook", READER_FIRST_NOTEBOOKS, ids=READER_FIRST)
def test_tendencies_are_counted_over_ten_runs_and_every_claim_ends_in_a_check(notebook):
    # "holds in k of n runs" is how a chapter reports a tendency: n is at least ten. And every
    # claim's ### subsection has a check (assert / np.testing) in a code cell on the page.
    notebook_cells = nbformat.read(notebook, as_version=4).cells
    printed = "".join(output_text(o) for c in notebook_cells if c.cell_type == "code" for o in c.outputs)
    for _, runs in re.findall(r"holds in (\d+) of (\d+) runs", printed):
        assert int(runs) >= 10, f"{notebook.name}: a tendency checked over {runs} runs only"
    page = "".join(c.source + "\n" if c.cell_type == "markdown" else f"<code>{c.source}</code>\n"
                   for c in notebook_cells if "remove-cell" not in tags(c))
    claims_section = page.split("## The article's claims, tested")[1].split("\n## ")[0]
    for claim in re.split(r"^(?=### )", claims_section, flags=re.MULTILINE)[1:]:
        code = "\n".join(re.findall(r"<code>(.*?)</code>", claim, re.DOTALL))
        assert re.search(r"^\s*(assert |np\.testing\.assert)", code, re.MULTILINE), (
            f"{notebook.name}: claim {claim.splitlines()[0]!r} has no check on the page")


@pytest.mark.parametrize("notebook", READER_FIRST_NOTEBOOKS, ids=READER_FIRST)
def test_going_further_comes_last(notebook):
    found = list(sections(nbformat.read(notebook, as_version=4).cells))
    assert found.index("Exercises") < found.index("Self-check"), found
    after = found[found.index("Self-check") + 1:]
    assert after in ([], ["Going further"]), f"{notebook.name}: after Self-check only 'Going further': {after}"


def test_core_size_report():
    # Run with `pytest -s` to see every chapter's numbers. READER_FIRST chapters must keep their
    # core within the limits and show the reading time computed by this rule, glued.
    problems, rows = [], []
    for notebook in CHAPTERS:
        words, lines = core_size(notebook.with_suffix(".md"))
        minutes, exact = reading_minutes(words, lines), exact_minutes(words, lines)
        rows.append(f"{notebook.stem:28s} {words:6d} words {lines:5d} code lines  "
                    f"{exact:5.1f} min, shown as about {minutes}")
        if notebook.stem not in READER_FIRST:
            continue
        if words > MAX_CORE_WORDS or exact > MAX_CORE_MINUTES:
            problems.append(f"{notebook.stem}: {words} words (max {MAX_CORE_WORDS}), "
                            f"{exact:.1f} minutes (max {MAX_CORE_MINUTES}) before ## Exercises: "
                            "move what does not serve the question to ## Going further")
        values = glued(notebook)
        expected = {"core_words": words, "core_code_lines": lines, "reading_minutes": minutes}
        wrong = {k: (values.get(k), v) for k, v in expected.items() if values.get(k) != str(v)}
        if wrong:
            problems.append(f"{notebook.stem}: glued (stored, expected) {wrong}: run `make sync`")
        title = nbformat.read(notebook, as_version=4).cells[0].source
        if "{glue:text}`reading_minutes`" not in title:
            problems.append(f"{notebook.stem}: no glued reading time under the title")
    print("\nthe core (before ## Exercises) of each chapter:", *rows, sep="\n  ")
    assert not problems, "\n".join(problems)


# --- the setup check page catches what would make every chapter fail (issue 21) ----------------

def setup_check_cell() -> str:
    cells = jupytext.read(BOOK / "00_setup_check.md").cells
    return next(c.source for c in cells if c.cell_type == "code" and "versions.require" in c.source)


def test_the_setup_check_reads_the_minimum_versions_from_the_companion():
    from companion import versions

    source = setup_check_cell()
    assert "versions.MINIMUM_VERSIONS" in source, "one list of minimums: the companion's"
    assert not re.search(r"__version__", source), "versions are checked by the companion"
    assert set(versions.MINIMUM_VERSIONS) >= {"keras", "tensorflow", "torch", "numpy"}


def test_the_setup_check_fails_on_a_keras_older_than_the_companion_needs(monkeypatch):
    pytest.importorskip("keras")
    pytest.importorskip("torch")
    from companion import versions

    real = versions._installed_version
    monkeypatch.setattr(versions, "_installed_version",
                        lambda package: "3.0.0" if package == "keras" else real(package))
    with pytest.raises(ImportError, match=r"keras 3\.0\.0 is too old.*keras>=3\.2"):
        exec(setup_check_cell(), {})


def test_the_setup_check_fails_without_scikit_learn(monkeypatch):
    pytest.importorskip("keras")
    pytest.importorskip("torch")
    for name in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn` raises ImportError
    with pytest.raises(ImportError, match="scikit-learn"):
        exec(setup_check_cell(), {})


# --- collapsed cells: one setup bar, and every bar says what it hides (issue 21) -----------------

HIDING_TAGS = {"hide-cell", "hide-input", "hide-output"}
LABELLED = READER_FIRST_NOTEBOOKS + [BOOK / "00_setup_check.ipynb"]


@pytest.mark.parametrize("notebook", LABELLED, ids=notebook_ids(LABELLED))
def test_every_collapsed_cell_says_what_it_hides(notebook):
    # Without a label the bar reads "Show code cell content" (or "source", "outputs"): the
    # reader cannot tell the setup from a plot from a solution without opening it.
    unlabelled = []
    for index, cell in enumerate(code_cells(notebook)):
        hidden = HIDING_TAGS & tags(cell)
        if not hidden or (hidden == {"hide-output"} and not cell.outputs):
            continue  # nothing collapsed, or an output bar with no output: no bar
        label = cell.metadata.get("mystnb", {}).get("code_prompt_show", "")
        if not label or "code cell" in label.lower():
            unlabelled.append(f"code cell {index}: {cell.source.splitlines()[0][:50]}")
    assert not unlabelled, f"{notebook.name}: collapsed cells with the default label: {unlabelled}"


@pytest.mark.parametrize("notebook", READER_FIRST_NOTEBOOKS, ids=READER_FIRST)
def test_one_setup_bar_before_the_short_answer(notebook):
    notebook_cells = nbformat.read(notebook, as_version=4).cells
    box = next(i for i, c in enumerate(notebook_cells)
               if c.cell_type == "markdown" and SHORT_ANSWER in c.source)
    bars = [c for c in notebook_cells[:box] if c.cell_type == "code" and HIDING_TAGS & tags(c)]
    assert len(bars) == 1, f"{notebook.name}: {len(bars)} collapsed bars above the short answer"


@pytest.mark.parametrize("notebook", READER_FIRST_NOTEBOOKS, ids=READER_FIRST)
def test_no_tooling_comments_or_history_on_the_page(notebook):
    # The page teaches; a formatter's directive or the chapter's own history is noise to a reader.
    notebook_cells = nbformat.read(notebook, as_version=4).cells
    code = "\n".join(c.source for c in notebook_cells if c.cell_type == "code")
    text = "\n".join(c.source for c in notebook_cells if c.cell_type == "markdown")
    assert not re.search(r"#\s*fmt:\s*(skip|off|on)", code), f"{notebook.name}: # fmt: comments"
    assert not re.search(r"earlier version of this (chapter|page)", text, re.IGNORECASE)
