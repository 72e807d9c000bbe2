import json

from lib import config, results


def test_result_carries_provenance_and_scale(tmp_path):
    params = config.load_params("latency", profile="smoke", results_dir=str(tmp_path))
    path = results.write_result(params, "latency", {"ratio": 0.5}, wall_time_s=1.23456)
    record = json.loads(path.read_text())
    assert path == tmp_path / "latency.json"
    assert record["ratio"] == 0.5 and record["wall_time_s"] == 1.235
    prov = record["provenance"]
    assert prov["profile"] == "smoke" and "not a finding" in prov["scale"]
    assert prov["params"]["results_dir"] == str(tmp_path)
    assert set(prov["versions"]) >= {"python", "torch", "transformers"}
    assert prov["hardware"]["cpu_count"] >= 1 and "torch_threads" in prov["hardware"]
    assert len(prov["git_commit"]) >= 7


def test_write_json_is_atomic_and_handles_numpy(tmp_path):
    import numpy as np
    path = results.write_json(tmp_path / "a" / "r.json", {"x": np.float32(0.5), "v": np.arange(3)})
    assert json.loads(path.read_text()) == {"x": 0.5, "v": [0, 1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left behind


def test_rewritten_outputs_do_not_mark_the_commit_dirty(tmp_path):
    import shutil
    import subprocess
    import sys
    repo = tmp_path / "repo"
    shutil.copytree(results.REPO_ROOT / "lib", repo / "lib")
    (repo / "results").mkdir()
    (repo / "results" / "r.json").write_text("{}")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "x"]):
        subprocess.run(git + args, cwd=repo, check=True, capture_output=True)

    def commit():  # lib.results.git_commit as seen from that checkout
        code = "import sys; sys.path.insert(0, '.'); from lib import results; print(results.git_commit())"
        return subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True).stdout.strip()

    (repo / "results" / "r.json").write_text('{"new": 1}')
    assert len(commit()) == 40  # a rewritten result is not a code change
    (repo / "lib" / "results.py").write_text((repo / "lib" / "results.py").read_text() + "\n# edit\n")
    assert commit().endswith("-dirty")


def test_results_name_the_commit_pinned_when_the_stage_started(tmp_path, monkeypatch):
    # a stage pins the commit as it starts; edits to the tree during a long run do not re-label its results
    commits = iter(["a" * 40, "b" * 40 + "-dirty"])
    monkeypatch.setattr(results, "git_commit", lambda: next(commits))
    monkeypatch.setattr(results, "_pinned_commit", None)
    assert results.pin_commit() == "a" * 40
    params = config.load_params("latency", profile="smoke", results_dir=str(tmp_path))
    path = results.write_result(params, "latency", {"ratio": 0.5}, wall_time_s=1.0)
    assert json.loads(path.read_text())["provenance"]["git_commit"] == "a" * 40
    monkeypatch.setattr(results, "_pinned_commit", None)  # outside a stage: the commit at write time
    assert results.provenance()["git_commit"] == "b" * 40 + "-dirty"
