"""occreid's DAG for Snakemake, built from the same registry as dvc.yaml (stages/registry.py).

One rule per stage, created in a loop: wildcards {dataset} / {experiment} for fan-out ({dataset} and
{spt_variant} for the partner tables: Stage.wildcards), inputs from the
resolved plan (so a method only depends on the per-dataset stages it needs), resources from the registry
(the SLURM executor turns them into cpus-per-task, mem, time and gpus). Each rule's command is bound when the
rule is defined, through ``params.cmd``: ``shell:`` is evaluated late and would otherwise run the last
stage's command in every rule. ``params.tracked`` holds the params values the stage declares, so
Snakemake's params rerun trigger re-runs exactly what DVC would. Output is also kept in
logs/<stage>/<key>.log; ``conda:`` names the environment for ``--sdm conda`` (by default the current
environment runs the jobs). A train job whose experiment asks for several processes
(``train.distributed``) runs under torchrun, on several nodes through srun, and asks SLURM for the GPUs
and nodes (stages/launch.py).

    snakemake -c2                                   # local, 2 cores
    snakemake --profile workflow/profiles/slurm     # one SLURM job per stage instance
    dvc commit -f                                   # afterwards: record the results in dvc.lock
"""

import json
import re

from stages.params import read_yaml
from stages.registry import build_plan
from stages.common import lookup
from stages.launch import LAUNCHED_STAGES, RESOURCE_KEYS, job_command, job_resources

PARAMS = read_yaml("params.yaml")
PLAN = build_plan(PARAMS)
WILDCARDS = sorted({w for s in PLAN.stages() for w in s.wildcards()})
VALUES = {w: sorted({j.ctx[w] for j in PLAN.jobs if w in j.stage.wildcards()}) for w in WILDCARDS}


wildcard_constraints:
    **{w: "|".join(map(re.escape, VALUES[w])) or "(?!)" for w in WILDCARDS},


rule all:
    default_target: True
    input:
        [out for job in PLAN.sinks() for out in job.outs],


def job_of(stage, wildcards):
    return PLAN.job(stage.name, stage.key_of(wildcards))


def inputs_of(stage):
    """Data made by upstream jobs plus the stage's own source files (not package folders: see registry)."""
    code = [path for path in stage.code if path.endswith(".py")]
    return lambda wildcards: list(job_of(stage, wildcards).deps) + code


def command_of(stage):
    return lambda wildcards: job_command(PARAMS, job_of(stage, wildcards))


def tracked_of(stage):
    return lambda wildcards: json.dumps(
        {key: lookup(PARAMS, key) for key in job_of(stage, wildcards).params}, sort_keys=True)


def outputs_of(stage):
    """Output patterns with the fan-out wildcard; persisted outputs are left out (Snakemake would delete
    them before the job, and training resumes from its checkpoints)."""
    pattern = {w: f"{{{w}}}" for w in stage.wildcards()}
    outs = [o for o in stage.outs if not o.persist]
    return [directory(o.path.format(**pattern)) if o.directory else o.path.format(**pattern) for o in outs]


def log_of(stage):
    key = "-".join(f"{{{w}}}" for w in stage.wildcards())
    return f"logs/{stage.name}/{key}.log" if key else f"logs/{stage.name}.log"


def resources_of(stage):
    if stage.name in LAUNCHED_STAGES:  # per job: GPUs (and nodes) from the experiment's train.distributed
        return {key: (lambda wildcards, key=key: job_resources(PARAMS, job_of(stage, wildcards))[key])
                for key in RESOURCE_KEYS}
    r = stage.resources
    res = {"mem_mb": r.mem_mb, "runtime": r.runtime, "cpus_per_task": r.cpus}
    if r.gpus:
        res["gpu"] = r.gpus
    return res


for stage in PLAN.stages():

    rule:
        name:
            stage.name
        input:
            inputs_of(stage),
        output:
            *outputs_of(stage),
        params:
            cmd=command_of(stage),
            tracked=tracked_of(stage),
        log:
            log_of(stage),
        threads: stage.resources.cpus
        resources:
            **resources_of(stage),
        conda:
            "environment.yml"
        shell:
            # jobs may run side by side: OpenMP threads sleep instead of spinning (stages/__init__.py)
            "export OMP_WAIT_POLICY=${{OMP_WAIT_POLICY:-PASSIVE}}; {params.cmd} 2>&1 | tee {log}"
