"""Run names derived from the resolved config (not the clock), as OmegaConf resolvers.

``${tgp_run_name:}`` → ``<method>-<dataset>-<model>-s<sparsity>[-ce][-sanity_<variant>]-seed<seed>-<hash>``, where the hash
covers every setting that changes results (infrastructure such as paths, loggers, device count
and data-loader workers excluded). The same command therefore finds the same run directory and
resumes there, and each job of a sweep gets a stable folder of its own.
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

from tgp.data import dataset_name

# Top-level nodes that never change what a run computes.
# compile/compile_mode: compiled kernels compute the same functions as eager ones and differ in float rounding
# only (fused ops, other reduction orders), like channels_last; see tgp.lit.compiled.
EXCLUDED_NODES = ("hydra", "paths", "logger", "progress_bar", "channels_last", "compile", "compile_mode", "stop_after",
                  "verbose", "ckpt_path", "tags", "extras")
# Keys inside nodes that change where or how fast a run goes, never what it computes.
INFRA_KEYS = {
    # data.cache / data.cache_dir: where decoded pixels are read from (the same pixels, the same
    # transforms and draws; tests/test_tiny_imagenet_cache.py checks batches are equal). Not
    # data.loader: the device path draws its crops and order from other generators than the torch path.
    "data": ("root", "num_workers", "pin_memory", "persistent_workers", "download", "eval_batch_size", "cache",
             "cache_dir"),
    "trainer": ("accelerator", "devices", "strategy", "num_nodes", "enable_progress_bar", "enable_model_summary",
                "log_every_n_steps", "benchmark", "sync_batchnorm", "profiler"),
    # What a stage logs and shows, not what it trains (best-checkpoint and early-stopping settings do count).
    "callbacks": ("lr_monitor", "rich_progress_bar"),
}


def result_relevant_config(cfg: DictConfig) -> dict:
    container = OmegaConf.to_container(cfg, resolve=False)
    container = {k: v for k, v in container.items() if k not in EXCLUDED_NODES}
    for node, keys in INFRA_KEYS.items():
        if isinstance(container.get(node), dict):
            container[node] = {k: v for k, v in container[node].items() if k not in keys}
    return container


def config_hash(cfg: DictConfig, length: int = 8) -> str:
    blob = json.dumps(result_relevant_config(cfg), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


def run_name(cfg: DictConfig) -> str:
    def pick(key, default="x"):
        value = OmegaConf.select(cfg, key, default=default)
        return default if value is None else value

    data = dataset_name(OmegaConf.select(cfg, "data", default=None)) or "data"
    kd = "" if pick("retrain.kd", True) else "-ce"
    sanity = OmegaConf.select(cfg, "pruning.sanity", default=None)
    sanity = f"-sanity_{sanity}" if sanity else ""
    return (f"{pick('method.name')}-{data}-{pick('model.name')}-s{pick('pruning.sparsity')}{kd}{sanity}"
            f"-seed{pick('seed')}-{config_hash(cfg)}")


def _run_name_resolver(*, _root_: DictConfig) -> str:
    return run_name(_root_)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("tgp_run_name"):
        OmegaConf.register_new_resolver("tgp_run_name", _run_name_resolver)
