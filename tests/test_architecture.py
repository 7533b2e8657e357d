"""docs/architecture.md is the contract between the scripts: keep it true.

Every run.env key a script writes, and every file a real run leaves in STATE_DIR, must
be documented there (and every key it documents must exist)."""

import ast
import re

import pytest

from conftest import ROOT, SCRIPTS

DOC = (ROOT / "docs" / "architecture.md").read_text()


def section(title: str) -> str:
    start = DOC.index(title)
    end = DOC.find("\n## ", start + len(title))
    return DOC[start:end if end != -1 else None]


def documented_keys() -> set[str]:
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", section("### run.env keys")))


def written_keys() -> dict[str, set[str]]:
    """Keyword arguments of every update_run/reset_run call in scripts/, by key."""
    keys: dict[str, set[str]] = {}
    for path in SCRIPTS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in ("update_run", "reset_run"):
                continue
            for kw in node.keywords:
                if kw.arg:
                    keys.setdefault(kw.arg, set()).add(path.name)
                elif isinstance(kw.value, ast.Dict):   # **{"PUBLISH_ERROR": …} or **{f"{key}_PID": …}
                    for k in kw.value.keys:
                        text = ast.unparse(k).strip("'\"f")
                        for who in ("PIPELINE", "FOLLOWER"):
                            keys.setdefault(text.replace("{key}", who), set()).add(path.name)
    return keys


def test_every_run_env_key_a_script_writes_is_documented():
    missing = {k: sorted(v) for k, v in written_keys().items() if k not in documented_keys()}
    assert not missing, f"run.env keys written but not in docs/architecture.md: {missing}"


def test_every_documented_run_env_key_is_written_somewhere():
    source = "\n".join(p.read_text() for p in SCRIPTS.glob("*.py"))
    stale = sorted(k for k in documented_keys() if k not in source)
    assert not stale, f"docs/architecture.md documents run.env keys no script writes: {stale}"


def test_every_exit_code_is_documented():
    import state

    codes = {name: value for name, value in vars(state).items() if name.startswith("EXIT_")}
    text = " ".join(section("## Exit codes").split())
    for name, value in codes.items():
        assert f"{value} `{name.removeprefix('EXIT_')}" in text, f"{name}={value} is not in docs/architecture.md"


@pytest.mark.slow
def test_every_file_a_real_run_leaves_in_state_dir_is_documented(project):
    """A whole pipeline (the scikit-learn example, fast) and make logs, then every entry of
    STATE_DIR and every key of its run.env must be in the contract."""
    project.seed_remote(ROOT / "models" / "sklearn" / "model.py")
    result = project.make("pipeline", MAX_TWEAKS="1", TARGET_ACCURACY="0.999")
    assert (project.state / "exit_code").read_text().strip() == "3", result.stderr[-2000:]   # below target
    assert project.make("logs").returncode == 0
    table = section("## STATE_DIR")
    undocumented = []
    for entry in sorted(project.state.iterdir()):
        name = entry.name + ("/" if entry.is_dir() else "")
        generic = re.sub(r"\d+", "N", name)
        if not any(f"`{n}" in table for n in (name, name.rstrip("/"), generic, generic.rstrip("/"))):
            undocumented.append(name)
    assert not undocumented, f"files in STATE_DIR not in docs/architecture.md: {undocumented}"
    missing = sorted(set(project.run_env()) - documented_keys())
    assert not missing, f"run.env keys of a real run not in docs/architecture.md: {missing}"
