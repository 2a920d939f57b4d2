"""The README starts with the truth and the two commands, and no page of it points nowhere.

- Its first screen (60 lines) holds the set-up and main-job commands, and the test command exactly
  as .ci/run runs it, and a Status block (between `<!-- status -->` and `<!-- /status -->`) whose
  numbers equal the committed reference run's `data/report/metrics.json` and
  `data/eval/<variant>/details.json` at the precision written, so it cannot go stale silently.
- Every relative link (and image) of README.md and docs/*.md exists, anchors included, and so does
  every repository path named in backticks, unless it is a pipeline output (dvc.lock's outs) or
  lies inside a dataset folder that params.yaml or profiles/paper.yaml points at (data to supply).
- The README stays under 200 lines; everything else lives in docs/.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FIRST_SCREEN = 60
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"
MAIN_JOB = "dvc exp run -S encoder.weights=random"

METRICS = json.loads((ROOT / "data/report/metrics.json").read_text())
VARIANTS = [name for name, value in METRICS.items() if isinstance(value, dict)]
TOP_LEVEL = [name for name, value in METRICS.items() if not isinstance(value, dict)]
PER_VARIANT = ("rollout_ratio", "z_usage", "plan_success")  # keys of metrics.json's variant rows
NUMBER = r"(-?\d+(?:\.\d+)?)"


# ---- the first screen --------------------------------------------------------------------------

def first_screen() -> str:
    return "\n".join(README.read_text().splitlines()[:FIRST_SCREEN])


def ci_commands() -> tuple[list[str], str]:
    """.ci/run's pip install lines (without -q and comments) and its last line, the test command."""
    lines = [line.split("#")[0].strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    lines = [line for line in lines if line]
    installs = [" ".join(w for w in line.split() if w != "-q") for line in lines if line.startswith("pip install")]
    return installs, lines[-1]


def test_the_first_screen_holds_both_commands_as_ci_runs_them():
    head = first_screen()
    installs, test_command = ci_commands()
    torch_pin = next(w for line in installs for w in line.split() if w.startswith("torch=="))
    editable = next(line for line in installs if " -e " in line)
    setup = [line.strip() for line in head.splitlines() if line.startswith("pip install")]
    assert any(torch_pin in line.split() and CPU_INDEX in line for line in setup), \
        f"no `pip install {torch_pin} {CPU_INDEX}` in the README's first {FIRST_SCREEN} lines"
    assert editable in setup, f"no `{editable}` (as .ci/run installs) in the README's first {FIRST_SCREEN} lines"
    assert f"\n{MAIN_JOB}\n```" in head, f"the main job `{MAIN_JOB}` is not in a code block of the first screen"
    assert f"```bash\n{test_command}\n```" in head, f"the test command `{test_command}` of .ci/run is not there"


def status_lines() -> list[str]:
    found = re.search(r"<!-- status -->\n(.*?)\n<!-- /status -->", first_screen(), re.S)
    assert found, f"no Status block (<!-- status --> ... <!-- /status -->) in the first {FIRST_SCREEN} lines"
    return [line.replace("\u2212", "-") for line in found.group(1).splitlines() if line.strip()]


def dotted(data: dict, key: str):
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def variant_values(metric: str) -> dict[str, float | None]:
    """Every variant's committed value of a metrics.json row key or a details.json key."""
    if metric in PER_VARIANT:
        return {v: METRICS[v].get(metric) for v in VARIANTS}
    values = {}
    for v in VARIANTS:
        path = ROOT / "data/eval" / v / "details.json"
        values[v] = dotted(json.loads(path.read_text()), metric) if path.is_file() else None
    return values


def agrees(written: str, value: float | None) -> bool:
    """`written` is `value` at the precision written (an integer exactly)."""
    if value is None:
        return False
    if "." not in written:
        return float(written) == value
    return abs(float(written) - value) <= 0.5 * 10 ** -len(written.split(".")[1]) + 1e-12


def test_status_numbers_are_the_committed_reference_run():
    lines = status_lines()
    assert 3 <= len(lines) <= 5, f"the Status block has {len(lines)} lines, not 3 to 5"
    checked = set()
    for line in lines:
        names = re.findall(r"`([^`]+)`", line)
        for key in TOP_LEVEL:
            if key in names:
                written = re.search(rf"`{key}`\)?:?\s*{NUMBER}", line)
                assert written, f"Status: no number after `{key}`: {line}"
                assert agrees(written.group(1), METRICS[key]), \
                    f"Status: {key} {written.group(1)}, but metrics.json has {METRICS[key]}"
                checked.add(key)
        metrics = [n for n in names if n in PER_VARIANT or re.fullmatch(r"probe\.\w+\.r2\w*", n)]
        if not metrics:
            continue
        metric = metrics[0]
        values = variant_values(metric)
        for variant, value in values.items():
            written = re.search(rf"(?<![\w./-]){re.escape(variant)} {NUMBER}(?![\d.]*\d)", line)
            if value is None:
                assert not written, f"Status: {variant} {metric} is written, but the run has none"
                continue
            assert written, f"Status: {metric} of {variant} ({value}) is missing: {line}"
            assert agrees(written.group(1), value), \
                f"Status: {variant} {metric} {written.group(1)}, but the committed run has {value}"
        checked.add("probe" if metric.startswith("probe.") else metric)
    missing = {*PER_VARIANT, *TOP_LEVEL, "probe"} - checked
    assert not missing, f"the Status block gives no numbers for {sorted(missing)}"


# ---- links and paths -----------------------------------------------------------------------------

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`]+)`")
PLACEHOLDERS = {"NAME", "VARIANT", "STORE", "PHASE", "DATASET", "FILE", "V", "K", "N"}


def prose(page: Path) -> str:
    """The page without its fenced code blocks (commands and messages, not references)."""
    return FENCE.sub("", page.read_text())


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", prose(page), re.M)}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading with that anchor)")
    return broken


def pipeline_outputs() -> list[str]:
    """Every output path of the committed run's dvc.lock (absent on a fresh clone when cached)."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    return [out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]


def dataset_folders() -> list[str]:
    """The dataset paths params.yaml and the paper profile point at: data the user supplies."""
    folders = []
    for name in ("params.yaml", "profiles/paper.yaml"):
        datasets = yaml.safe_load((ROOT / name).read_text()).get("datasets", {})
        folders += [d["path"] for d in datasets.values() if not str(d["path"]).startswith("..")]
    return folders


def repo_path(token: str) -> str | None:
    """The repository path a code span names, or None where it names none: a command, a value, a
    placeholder (NAME, VARIANT, <id>), a path outside the repository or inside a dataset."""
    token = token.strip().split("::")[0]
    if not token or re.search(r"[\s<>{}*…$|\\\"'()\[\]=,;@]", token) or token.startswith(("../", "/", "~", "-")):
        return None
    if any(part.split(".")[0] in PLACEHOLDERS for part in token.split("/")):
        return None
    if "/" in token:
        first = token.split("/")[0]
        return token.rstrip("/") if first and (ROOT / first).exists() else None
    return token if re.fullmatch(r"[\w.-]+\.(md|yaml|yml|toml|lock|cff)|LICENSE", token) else None


def missing_paths(page: Path) -> list[str]:
    allowed = [*pipeline_outputs(), *dataset_folders()]
    missing = []
    for token in CODE.findall(prose(page)):
        path = repo_path(token)
        if path is None or (ROOT / path).exists():
            continue
        if not any(path == root or path.startswith(root.rstrip("/") + "/") for root in allowed):
            missing.append(path)
    return missing


def test_every_link_and_named_path_of_the_readme_and_docs_exists():
    assert len(PAGES) > 1, "docs/ has no pages"
    problems = {page.relative_to(ROOT).as_posix(): broken_links(page) + missing_paths(page) for page in PAGES}
    assert not {k: v for k, v in problems.items() if v}, problems


def test_the_readme_stays_short():
    lines = len(README.read_text().splitlines())
    assert lines < 200, f"README.md has {lines} lines; move the detail to a page of docs/"
