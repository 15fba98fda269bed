"""``make demo-text`` end to end at toy size: the Makefile's own recipe lines (the task writer, the three
sweeps, the report), each job run in this process with toy epochs, and a report whose table has 95 %
intervals and paired differences to SDP."""

from __future__ import annotations

import itertools
import re
import shlex

from conftest import ROOT, compose_cfg

TOY = ["kd_pretrain.epochs=1", "retrain.epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
       "data.eval_batch_size=128", "logger=none"]


def makefile_recipe(target: str) -> list[str]:
    """The command lines of ``target`` in the Makefile (after its rule line; a target-specific variable line
    such as ``demo-text: export X ?= 1`` is not the rule)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = lines.index(next(ln for ln in lines if ln.startswith(f"{target}:") and "=" not in ln)) + 1
    out = []
    for line in lines[start:]:
        if not line.startswith("\t"):
            break
        out.append(line.strip())
    return out


def expand(overrides: list[str]) -> list[list[str]]:
    """A Hydra multirun's jobs: the cartesian product of comma-separated values (the basic sweeper's)."""
    choices = [[f"{o.split('=', 1)[0]}={v}" for v in o.split("=", 1)[1].split(",")] for o in overrides]
    return [list(job) for job in itertools.product(*choices)]


def test_demo_text_recipe_end_to_end_at_toy_size_and_its_report_has_intervals(tmp_path, capsys):
    from tgp.data.text.generated import main as write_task
    from tgp.naming import run_name
    from tgp.pipeline import run_pipeline
    from tgp.report.cli import main as report

    data, logs = tmp_path / "data", tmp_path / "outputs"
    commands = makefile_recipe("demo-text")
    assert [c.split()[2] for c in commands] == ["tgp.data.text.generated", "tgp.run", "tgp.run", "tgp.run", "tgp.report"]
    jobs = 0
    for command in commands:
        words = shlex.split(command.replace("$(DEMO_DATA)", str(data)).replace("$(LOGS)", str(logs))
                            .replace("$(ARGS)", ""))
        module, args = words[2], words[3:]
        if module == "tgp.data.text.generated":
            write_task([*args, "--n-train", "240", "--n-dev", "60"])
        elif module == "tgp.run":
            assert args[0] == "-m"
            overrides = [a for a in args[1:] if not a.startswith("paths.log_dir=")]
            for job in expand(overrides):
                cfg = compose_cfg([*job, *TOY], logs)
                run_pipeline(cfg, logs / "sweeps" / str(cfg.name) / run_name(cfg))
                jobs += 1
        else:
            assert report([*args, "--no-plots"]) in (0, None)
    assert jobs == 9
    table = (logs / "sweeps" / "demo_text" / "report.md").read_text()
    interval = r"\[[+−-]?\d+\.\d+, [+−-]?\d+\.\d+\]"
    rows = {m: next(ln for ln in table.splitlines() if ln.startswith(f"| {m} |")) for m in ("sdp", "sdp (λ=0)", "magnitude")}
    for method, line in rows.items():
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == "roleswap" and cells[4] == "90.00" and cells[-1] == "3", line
        assert len(re.findall(interval, line)) >= (2 if method == "sdp" else 4), line  # CIs (+ Δ vs sdp for the others)
    assert "reference" in rows["sdp"]
    assert "9 done, 0 failed" in capsys.readouterr().out
