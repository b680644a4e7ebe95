"""README.md's command blocks, run: "## Try it in a minute" as written, "## Usage" on a generated toy world.

Both blocks are read from README.md itself (the first ```bash fence after each heading), so an edit there is
tested as it stands. Every command runs with `bash -c` in a temporary workspace that links the repository's
packages and `.venv`, so `.venv/bin/python` and the relative paths (`runs/...`, `weights/...`) resolve as in a
checkout while the outputs stay out of the repository.

  * test_readme_blocks_parse (fast): both blocks parse, every line starts with a known entry point, every
    `-m module` is importable, every repository file a line names exists, every `$VAR` is set by the block.
  * test_try_it_block_runs_as_written (slow): the block line by line, unchanged; then its outputs.
  * test_usage_block_on_toy_world (slow): IMAGENET / COCO / ADE point at a toy world and each entry point gets
    its smoke flags; the SLURM lines are checked without a cluster (submitit's --dry-run; `bash -n` and the
    usage refusal of the sbatch script) and the pre-training job each of them would start is run.
  * test_usage_sbatch_test_only (slurm): the sbatch line with `--test-only` on the local test cluster.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
TRY_IT = "## Try it in a minute"
USAGE = "## Usage"
# what the commands need from the repository (linked into the workspace)
LINKS = ("pretrain", "transfer", "benchmarks", "slurm", ".venv", "pyproject.toml", "README.md")
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
VAR_REF = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
PYTHONS = (".venv/bin/python", "python")
RUN_ALL = "benchmarks/run_all.py"
REPO_FILE = re.compile(r"^(pretrain|transfer|slurm|benchmarks)/\S+\.(py|yaml|sbatch)$")
TIMEOUT_S = 600          # per command; anything near it would be a bug report (the blocks take ~1 min each)
TAIL = 3000

# Usage block: the README's dataset variables -> the toy world's folders (benchmarks.toydata's layout)
TOY_PATHS = {"IMAGENET": "imagenet", "COCO": "coco", "ADE": "ade/ADEChallengeData2016"}
TOY_WORLD = ["--n-train", "4", "--n-val", "2", "--n-dense-train", "4", "--n-dense-val", "2"]
# smoke flags appended to each entry point of the Usage block. Pre-training: the R50 preset (224 px, mask_patch
# 32, batch 256) at 64 px is valid (64 % 32 == 0: a 2x2 mask grid; 64 % 32 output stride), ~6 s for 2 steps
PRETRAIN_SMOKE = ["run.max_steps=2", "model.input_size=64", "run.batch_per_gpu=4", "data.num_workers=0"]
SMOKE = {
    "pretrain.train": PRETRAIN_SMOKE,
    "transfer.mmdet.train": ["--tiny", "64"],
    "transfer.mmseg.train": ["--tiny", "64"],
    "transfer.detectron2.train": ["--tiny"],
    "transfer.classification.train": ["--tiny"],
    RUN_ALL: ["--dry-run"],
}
# the local test cluster (slurm/cluster/start.sh) has one partition, `debug`, and 8 CPUs; the template asks for
# partition gpu and 10 CPUs per task. Command-line options override #SBATCH lines (as README's sbatch note says).
SBATCH_TEST_ONLY = ["--test-only", "--partition=debug", "--cpus-per-task=1"]


# ---------------------------------------------------------------------------------------------- parsing README

@dataclass
class Command:
    line: str                      # as written in README.md
    argv: list[str]                # shlex words, variables unexpanded
    variables: dict[str, str] = field(default_factory=dict)   # the block's assignments in effect

    def option(self, name: str) -> str | None:
        """The value of `--name VALUE` / `--name=VALUE`, else None."""
        for i, a in enumerate(self.argv):
            if a == name and i + 1 < len(self.argv):
                return self.argv[i + 1]
            if a.startswith(name + "="):
                return a.split("=", 1)[1]
        return None


def readme_block(heading: str, text: str | None = None) -> str:
    """The first ```bash fenced block after the line `heading` (a level-2 heading of README.md)."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    assert heading in lines, f"README.md has no heading {heading!r}"
    i = lines.index(heading) + 1
    while i < len(lines) and lines[i].strip() != "```bash":
        assert not (lines[i].startswith("## ") and lines[i] != heading), \
            f"no ```bash block between {heading!r} and the next heading {lines[i]!r}"
        i += 1
    assert i < len(lines), f"no ```bash block after {heading!r}"
    body = []
    for line in lines[i + 1:]:
        if line.strip() == "```":
            return "\n".join(body)
        body.append(line)
    raise AssertionError(f"the ```bash block after {heading!r} is not closed")


def parse_commands(block: str) -> list[Command]:
    """Command lines of a block: blank lines and `#` comments skipped, a line of only VAR=value words sets
    variables for the lines after it (a trailing backslash continues a line)."""
    out, variables, pending = [], {}, ""
    for raw in block.splitlines():
        line = (pending + raw.strip()) if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line, comments=True)
        if words and all(ASSIGNMENT.match(w) for w in words):
            variables = {**variables, **dict(w.split("=", 1) for w in words)}
            continue
        out.append(Command(line=line, argv=words, variables=dict(variables)))
    return out


def entry_point(argv: list[str]) -> str | None:
    """`module` for `.venv/bin/python -m module`, `benchmarks/run_all.py` for the script (either python),
    `sbatch` for sbatch; None for anything else."""
    if len(argv) >= 3 and argv[0] == ".venv/bin/python" and argv[1] == "-m":
        return argv[2]
    if len(argv) >= 2 and argv[0] in PYTHONS and argv[1] == RUN_ALL:
        return RUN_ALL
    if argv and argv[0] == "sbatch":
        return "sbatch"
    return None


def sbatch_script(cmd: Command) -> tuple[str, list[str]]:
    """(script, its arguments) of an sbatch line: the first word after the sbatch options."""
    for i, a in enumerate(cmd.argv[1:], 1):
        if not a.startswith("-"):
            return a, cmd.argv[i + 1:]
    raise AssertionError(f"no batch script in `{cmd.line}`")


def test_parse_commands_rules():
    block = "\n# a comment\nA=/x B=/y\n\n.venv/bin/python -m m --p $A   # trailing\nsbatch --n=1 s.sbatch C \\\n  k=v\n"
    cmds = parse_commands(block)
    assert [c.argv for c in cmds] == [[".venv/bin/python", "-m", "m", "--p", "$A"],
                                      ["sbatch", "--n=1", "s.sbatch", "C", "k=v"]]
    assert cmds[0].variables == {"A": "/x", "B": "/y"} and cmds[0].option("--p") == "$A"
    assert sbatch_script(cmds[1]) == ("s.sbatch", ["C", "k=v"])
    assert entry_point(["python", "-m", "m"]) is None      # a bare `python -m` is not an entry point of the README


# ------------------------------------------------------------------------------------------- running commands

@dataclass
class Workspace:
    root: Path
    env: dict[str, str]
    timings: list[tuple[float, str]] = field(default_factory=list)

    def run(self, line: str, extra_env: dict[str, str] | None = None, timeout: int = TIMEOUT_S):
        t0 = time.monotonic()
        try:
            proc = subprocess.run(["bash", "-c", line], cwd=self.root, env={**self.env, **(extra_env or {})},
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                  timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            pytest.fail(f"`{line}` ran past {timeout} s (cwd {self.root}):\n{out[-TAIL:]}", pytrace=False)
        self.timings.append((time.monotonic() - t0, line))
        return proc

    def ok(self, line: str, extra_env: dict[str, str] | None = None) -> str:
        proc = self.run(line, extra_env)
        assert proc.returncode == 0, \
            f"`{line}` exited {proc.returncode} (cwd {self.root}); last output:\n{proc.stdout[-TAIL:]}"
        return proc.stdout

    def report(self) -> str:
        return "\n".join(f"{s:7.1f} s  {line}" for s, line in self.timings)


def child_env(root: Path) -> dict[str, str]:
    """As tests/pretrain/imgfactory.child_env: one thread, no GPU, no launcher / SLURM variables of an outer job;
    the workspace importable and its .venv first on PATH (so a README `python` is the suite's interpreter)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
           and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(root),
               MPLBACKEND="Agg", PATH=os.pathsep.join([str(root / ".venv" / "bin"), os.environ.get("PATH", "")]))
    return env


def make_workspace(root: Path) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    for name in LINKS:
        assert (REPO / name).exists(), f"{REPO / name} is missing (run `make setup-env` for .venv)"
        (root / name).symlink_to(REPO / name)
    return Workspace(root=root, env=child_env(root))


def read_result(run_dir: Path) -> dict:
    path = run_dir / "result.json"
    assert path.is_file(), f"{path} was not written"
    return json.loads(path.read_text())


def repo_outputs() -> dict[Path, bool]:
    """Where the blocks' relative outputs would land had they run in the repository."""
    paths = (REPO / "runs" / "quick", REPO / "runs" / "r50", REPO / "weights" / "a2mim_r50.safetensors")
    return {p: p.exists() for p in paths}


# ---------------------------------------------------------------------------------------------------- fast

def test_readme_blocks_parse():
    for heading in (TRY_IT, USAGE):
        cmds = parse_commands(readme_block(heading))
        assert cmds, f"no command lines in the block under {heading!r}"
        for cmd in cmds:
            ep = entry_point(cmd.argv)
            assert ep is not None, (f"{heading}: `{cmd.line}` starts with none of the known entry points "
                                    f"(.venv/bin/python -m MODULE, [.venv/bin/]python {RUN_ALL}, sbatch)")
            if ep not in (RUN_ALL, "sbatch"):
                try:
                    spec = importlib.util.find_spec(ep)
                except ModuleNotFoundError as e:   # a parent package is missing
                    spec, why = None, str(e)
                else:
                    why = "no such module"
                assert spec is not None, f"{heading}: `{cmd.line}`: module {ep} is not importable ({why})"
            for word in cmd.argv:
                if REPO_FILE.match(word):
                    assert (REPO / word).is_file(), f"{heading}: `{cmd.line}` names {word}, which does not exist"
            undefined = set(VAR_REF.findall(cmd.line)) - set(cmd.variables)
            assert not undefined, f"{heading}: `{cmd.line}` uses {sorted(undefined)}, which the block never sets"
    assert not parse_commands(readme_block(TRY_IT))[0].variables, "the Try-it block must run without variables"
    usage = parse_commands(readme_block(USAGE))
    assert set(usage[0].variables) == set(TOY_PATHS), \
        f"the Usage block sets {sorted(usage[0].variables)}; this test maps {sorted(TOY_PATHS)} onto the toy world"


# ---------------------------------------------------------------------------------------- Try it in a minute

@pytest.mark.slow
def test_try_it_block_runs_as_written(tmp_path):
    before = repo_outputs()
    ws = make_workspace(tmp_path / "ws")
    cmds = parse_commands(readme_block(TRY_IT))
    for cmd in cmds:
        ws.ok(cmd.line)
    print("Try it in a minute, per command:\n" + ws.report())

    quick = ws.root / "runs" / "quick"
    assert (quick / "r18.safetensors").is_file()
    for name in ("mmdet", "mmseg", "d2", "ft", "lin"):
        read_result(quick / name)
    leaderboard = quick / "leaderboard"
    assert any(leaderboard.glob("*.md")), f"no Markdown leaderboard in {leaderboard}: {os.listdir(leaderboard)}"
    # every transfer run of the block is a smoke run: its protocol carries a marker (+tiny, +overrides)
    checked = set()
    for cmd in cmds:
        work_dir = cmd.option("--work-dir")
        if work_dir is None or not (ws.root / work_dir / "result.json").is_file():
            continue
        result = read_result(ws.root / work_dir)
        if "protocol" not in result:   # pre-training's result.json has no protocol
            continue
        assert "+" in result["protocol"], f"`{cmd.line}`: result.json protocol {result['protocol']!r} has no marker"
        if "--tiny" in cmd.argv:
            assert "+tiny" in result["protocol"], f"`{cmd.line}`: protocol {result['protocol']!r} lacks +tiny"
        checked.add(Path(work_dir).name)
    assert checked >= {"mmdet", "mmseg", "d2", "ft", "lin"}, f"protocols checked only for {sorted(checked)}"
    assert repo_outputs() == before, "the block wrote into the repository instead of the workspace"


# -------------------------------------------------------------------------------------------------- Usage

def toy_world(ws: Workspace) -> dict[str, str]:
    """A toy ImageNet / COCO / ADE under the workspace; the values of the Usage block's variables."""
    ws.ok(shlex.join([".venv/bin/python", "-m", "benchmarks.toydata", "toy", *TOY_WORLD]))
    paths = {var: str(ws.root / "toy" / sub) for var, sub in TOY_PATHS.items()}
    for var, path in paths.items():
        assert Path(path).is_dir(), f"benchmarks.toydata made no {path} (for ${var})"
    return paths


def expand(word: str, variables: dict[str, str]) -> str:
    """`$NAME` / `${NAME}` in a word replaced by its value (what bash does to the README's unquoted words)."""
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: variables[m.group(1)], word)


def with_flags(cmd: Command, flags: list[str]) -> str:
    return f"{cmd.line} {shlex.join(flags)}" if flags else cmd.line


def run_pretrain_job(ws: Workspace, argv: list[str], env: dict[str, str], name: str) -> None:
    """Run the pre-training a SLURM job would start (its config and overrides), as a smoke run in a fresh folder:
    the data.root it passes must be one the preset reads."""
    assert "pretrain.train" in argv, f"not a pre-training job: {shlex.join(argv)}"
    line = shlex.join([*argv, *PRETRAIN_SMOKE, f"run.out_dir=runs/{name}"])   # the last run.out_dir wins
    ws.ok(line, env)
    assert (ws.root / "runs" / name / "done").is_file(), f"`{line}` left no done marker"


def check_refused(ws: Workspace, cmd: Command, line: str, env: dict[str, str], needles: list[str]) -> None:
    proc = ws.run(line, env)
    assert proc.returncode != 0, f"`{line}` should be refused by the data pre-flight but exited 0"
    assert "dataset check failed" in proc.stdout, f"`{line}` failed, but not in the pre-flight:\n{proc.stdout[-TAIL:]}"
    for needle in needles:
        assert needle in proc.stdout, f"`{line}`: the refusal does not name {needle!r}:\n{proc.stdout[-TAIL:]}"
    assert not (ws.root / cmd.option("--work-dir") / "result.json").exists(), "a refused run wrote result.json"


@pytest.mark.slow
def test_usage_block_on_toy_world(tmp_path):
    before = repo_outputs()
    ws = make_workspace(tmp_path / "ws")
    env = toy_world(ws)
    toy = ws.root / "toy"
    coco_json = json.loads((toy / "coco" / "annotations" / "instances_train2017.json").read_text())
    coco_names = [c["name"] for c in coco_json["categories"]]
    ade_card = json.loads((toy / "ade/dataset.json").read_text())
    n_ade = ade_card.get("num_classes") or len(ade_card["classes"])
    # The real COCO / ADE20K configs on the toy data are REFUSED by the data pre-flight, on purpose (documented in
    # transfer/datacheck.py: every head's num_classes / the config's class names must match the data's): the
    # 80-class COCO config's names are not the toy COCO's 8 categories, and UperNet's 150-class heads are not the
    # toy ADE's classes. The refusal, before any model is built, is what this test asserts for them.
    refused = {
        "transfer/mmdet/configs/mask_rcnn_r50_c4_2x_moco.py": ["of the config's 80 class names",
                                                               f"the json's {len(coco_names)} categories", "'person'",
                                                               repr(coco_names[0])],
        "transfer/mmseg/configs/upernet_r50_160k.py": ["num_classes = 150", f"has {n_ade} classes"],
    }
    seen = set()
    for cmd in parse_commands(readme_block(USAGE)):
        ep = entry_point(cmd.argv)
        seen.add(ep)
        line = with_flags(cmd, SMOKE.get(ep, []))
        work_dir = cmd.option("--work-dir")
        if ep in ("transfer.mmdet.train", "transfer.mmseg.train") and cmd.argv[3] in refused:
            check_refused(ws, cmd, line, env, refused[cmd.argv[3]])
        elif ep == "sbatch":
            # no cluster here (test_usage_sbatch_test_only submits it to the local one): the script parses, refuses
            # to run without CONFIG, and the job it would start pre-trains on the data it is given
            script, args = sbatch_script(cmd)
            ws.ok(f"bash -n {shlex.quote(script)}")
            bare = ws.run(f"bash {shlex.quote(script)}", {**env, "SLURM_SUBMIT_DIR": str(ws.root)})
            assert bare.returncode == 2 and f"usage: sbatch {script} CONFIG" in bare.stdout, \
                f"`bash {script}` without CONFIG: exit {bare.returncode}:\n{bare.stdout[-TAIL:]}"
            # slurm/pretrain.sbatch runs `$PYTHON -m pretrain.train --config CONFIG ARGS...` on every rank
            run_pretrain_job(ws, [".venv/bin/python", "-m", "pretrain.train", "--config",
                                  *(expand(a, env) for a in args)], env, "r50_sbatch_job")
        else:
            out = ws.ok(line, env)
            if ep == "pretrain.train":
                for name in ("done", "backbone.safetensors"):
                    assert (ws.root / work_dir / name).is_file(), f"`{line}` wrote no {work_dir}/{name}"
                assert read_result(ws.root / work_dir)["task"] == "pretrain"
            elif ep == "pretrain.export":
                out_file = ws.root / cmd.option("--out")
                assert out_file.is_file() and out_file.with_suffix(".json").is_file(), f"`{line}` wrote no {out_file}"
            elif ep in ("transfer.detectron2.train", "transfer.classification.train",
                        "transfer.mmdet.train", "transfer.mmseg.train"):
                assert (ws.root / work_dir / "load_report.json").is_file(), f"`{line}` wrote no load_report.json"
                protocol = read_result(ws.root / work_dir)["protocol"]
                assert "+tiny" in protocol, f"`{line}`: result.json protocol {protocol!r} lacks the +tiny marker"
            elif ep == "transfer.detectron2.convert":
                pkl = ws.root / cmd.argv[-1]
                assert pkl.is_file() and pkl.with_suffix(".yaml").is_file(), f"`{line}` wrote no {pkl} + .yaml"
            elif ep == "slurm.submit":
                for opt in ("--nodes", "--gpus-per-node", "--partition"):
                    if cmd.option(opt) is not None:
                        assert f"#SBATCH {opt}={cmd.option(opt)}" in out, f"`{line}` printed no {opt}:\n{out[-TAIL:]}"
                jobs = re.findall(r"^# job \d+: (.+)$", out, flags=re.M)
                assert jobs, f"`{line}` printed no job command:\n{out[-TAIL:]}"
                for i, job in enumerate(jobs):
                    run_pretrain_job(ws, shlex.split(job), env, f"r50_submit_job{i}")
            elif ep == RUN_ALL:
                for only in (cmd.option("--only") or "").split(","):
                    assert only in out, f"`{line}`: the plan has no step matching {only!r}:\n{out[-TAIL:]}"
    print("Usage, per command:\n" + ws.report())
    assert {"pretrain.train", "pretrain.export", "sbatch", RUN_ALL} <= seen
    assert repo_outputs() == before, "the block wrote into the repository instead of the workspace"


# ------------------------------------------------------------------------------------------- Usage: sbatch

def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def sbatch_cluster(tmp_path_factory):
    """A local SLURM cluster from slurm/cluster/start.sh (the scripts behind tests/slurm's session fixture),
    without accounting (--test-only needs only slurmctld), stopped by PID when this module is done."""
    if shutil.which("sbatch") is None:
        pytest.skip("no sbatch on PATH (test_usage_block_on_toy_world checks the sbatch line without a cluster)")
    base = tmp_path_factory.mktemp("slurm_docs")
    ctld, slurmd = _free_ports(2)
    env = dict(os.environ, SLURM_FAKE_GPUS="2", SLURM_NODE_CPUS="8", SLURM_ACCOUNTING="0",
               SLURM_PORT_CTLD=str(ctld), SLURM_PORT_SLURMD=str(slurmd))
    scripts = REPO / "slurm" / "cluster"
    proc = subprocess.run(["bash", str(scripts / "start.sh"), str(base)], env=env, capture_output=True, text=True,
                          timeout=180)
    try:
        if proc.returncode != 0:
            pytest.fail(f"slurm/cluster/start.sh {base} failed (exit {proc.returncode}):\n"
                        f"{proc.stdout[-TAIL:]}\n{proc.stderr[-TAIL:]}", pytrace=False)
        yield base / "etc" / "slurm.conf"
    finally:
        stop = subprocess.run(["bash", str(scripts / "stop.sh"), str(base)], capture_output=True, text=True,
                              timeout=180)
        assert stop.returncode == 0, f"slurm/cluster/stop.sh failed:\n{stop.stdout}\n{stop.stderr}"


@pytest.mark.slurm
def test_usage_sbatch_test_only(sbatch_cluster, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    env = {var: str(ws.root / "toy" / sub) for var, sub in TOY_PATHS.items()}   # --test-only reads no data
    lines = [c for c in parse_commands(readme_block(USAGE)) if entry_point(c.argv) == "sbatch"]
    assert lines, "the Usage block has no sbatch line"
    for cmd in lines:
        line = f"sbatch {shlex.join(SBATCH_TEST_ONLY)} {cmd.line[len('sbatch'):].lstrip()}"
        out = ws.ok(line, {**env, "SLURM_CONF": str(sbatch_cluster)})
        assert "to start at" in out, f"`{line}`: sbatch --test-only did not schedule the job:\n{out[-TAIL:]}"
