"""fetch.py: clone or update the model repository from a real (bare, on-disk) remote."""

def test_fetch_clones_the_remote_and_records_the_commit(project):
    result = project.script("fetch")
    assert result.returncode == 0, result.stderr
    head = project.git("rev-parse", "main", cwd=project.remote).stdout.strip()
    assert result.stdout.strip() == head
    assert project.run_env()["COMMIT"] == head
    assert (project.checkout / "model.py").exists()


def test_fetch_if_changed_exits_0_only_when_the_remote_head_moved(project):
    assert project.script("fetch").returncode == 0
    assert project.script("fetch", "--if-changed").returncode == 9
    new = project.push_change("README.md", "hello\n")
    result = project.script("fetch", "--if-changed")
    assert result.returncode == 0, result.stderr
    assert project.run_env()["COMMIT"] == new
    assert (project.checkout / "README.md").read_text() == "hello\n"


def test_fetch_drops_local_edits_to_the_checkout(project):
    assert project.script("fetch").returncode == 0
    (project.checkout / "model.py").write_text("edited by a tweak\n")
    assert project.script("fetch").returncode == 0
    assert "edited by a tweak" not in (project.checkout / "model.py").read_text()


def test_fetch_of_a_missing_repository_is_one_clear_line(project):
    result = project.script("fetch", MODEL_REPO=str(project.root / "nope.git"))
    assert result.returncode == 2
    assert f"error: MODEL_REPO {project.root / 'nope.git'} does not exist" in result.stderr
    # no run starts; only the failure is kept, for the message to the developer
    assert project.run_env() == {"FAILED_STAGE": "fetch", "FAILURE": result.stderr.strip().splitlines()[-1].removeprefix("error: ")}


def test_fetch_of_a_missing_branch_names_the_branches_there(project):
    result = project.script("fetch", MODEL_BRANCH="develop")
    assert result.returncode == 2
    assert "error: branch 'develop' not found" in result.stderr and "(branches: main)" in result.stderr


def test_fetch_of_a_path_that_is_not_a_repository(project):
    (project.root / "empty").mkdir()
    result = project.script("fetch", MODEL_REPO=str(project.root / "empty"))
    assert result.returncode == 2
    assert "is not a readable git repository" in result.stderr
