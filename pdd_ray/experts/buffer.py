"""Build an expert buffer with Ray: missing experts trained in parallel tasks, written to a TrajectoryStore.

Each expert is one Ray task with explicit resources (CPUs, fractional GPU).
The training data goes into the object store once and every task reads it
zero-copy. The driver alone writes the store, as each task finishes, so a
crash loses at most the experts still in flight; running the same command
again trains only the missing ones.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from pdd_ray import synset as synset_io
from pdd_ray.augment import make_augment
from pdd_ray.cluster import check_fits
from pdd_ray.config import AugmentConfig, DataConfig, ModelConfig, check_device, to_dict
from pdd_ray.errors import UserError
from pdd_ray.experts.train import ExpertRecipe, train_expert
from pdd_ray.models import model_factory
from pdd_ray.precision import check_precision
from pdd_ray.progress import progress_bar, task_counter
from pdd_ray.selection.forgetting import save_scores
from pdd_ray.storage import is_uri, prepare_output_dir, upload_directory

log = logging.getLogger(__name__)

# Worth another attempt (crashes, OOM, injected faults); a UserError would fail again the same way.
RETRIED = [RuntimeError, OSError, MemoryError]
FAIL_ONCE_ENV = "PDD_RAY_FAIL_ONCE_DIR"  # fault injection for tests: first attempt of each expert raises
KEEP_CHOICES = ("all", "last")
# Upper limits on a buffer's size: far beyond the paper (100 experts x 50 epochs), small enough that
# a typo (num_experts=1e9) ends in one line instead of a buffer nobody can store.
MAX_EXPERTS = 10_000
MAX_EPOCHS = 10_000
# ExpertsConfig fields that say where experts run, not what they are (the run's own sections stand for
# data/model/augment); ``keep`` only says what is kept on disk afterwards.
NOT_IDENTITY = ("out", "device", "address", "data", "model", "augment", "keep")


@dataclass
class ExpertsConfig:
    """``pdd-ray experts``: how many experts, their recipe, and the resources each one gets."""

    out: str = "runs/experts"
    num_experts: int = 10
    seed: int = 0
    device: str = "auto"
    address: str | None = None  # Ray cluster; None: RAY_ADDRESS or a local Ray
    cpus_per_expert: float = 1.0
    gpus_per_expert: float = 0.0  # 0.25 puts four experts on one GPU
    max_retries: int = 2
    dtype: str = "float32"
    # fp32 | bf16 | auto (pdd_ray.precision): the experts' training; resolved on each expert's own device.
    precision: str = "fp32"
    track_forgetting: bool = False
    transition: str | None = None  # synthetic-set directory: experts train on its union before real data
    transition_from: str | None = None  # expert buffer: expert k starts from its expert k's snapshot 0 (the chain)
    train_positions: str | None = None  # safetensors file of training-split positions the experts train on
    # In a PDD run: "last" deletes a finished stage's buffer once the next stage's is built (never a given
    # buffer, nor stage 1's while a forgetting curriculum still needs its scores); "all" keeps every one.
    keep: str = "all"
    recipe: ExpertRecipe = field(default_factory=ExpertRecipe)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        r = self.recipe
        checks = [(self.num_experts >= 1, f"num_experts must be >= 1, got {self.num_experts}"),
                  (self.num_experts <= MAX_EXPERTS, f"num_experts must be <= {MAX_EXPERTS}, got {self.num_experts}"),
                  (self.cpus_per_expert > 0, f"cpus_per_expert must be > 0, got {self.cpus_per_expert}"),
                  (self.gpus_per_expert >= 0, f"gpus_per_expert must be >= 0, got {self.gpus_per_expert}"),
                  (self.max_retries >= 0, f"max_retries must be >= 0, got {self.max_retries}"),
                  (self.dtype in ("float32", "float16", "bfloat16"), "dtype must be float32, float16 or bfloat16"),
                  (r.epochs >= 1 and r.batch_size >= 1 and r.lr > 0, "recipe.epochs, batch_size and lr must be > 0"),
                  (r.store_epochs is None or r.store_epochs >= 1, "recipe.store_epochs must be >= 1"),
                  (r.epochs <= MAX_EPOCHS, f"recipe.epochs must be <= {MAX_EPOCHS}, got {r.epochs}")]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if r.transition_budget_problem():
            raise UserError(r.transition_budget_problem())
        if self.keep not in KEEP_CHOICES:
            raise UserError(f"experts.keep must be one of {', '.join(KEEP_CHOICES)}, got '{self.keep}'")
        check_device(self.device)
        check_precision(self.precision, "experts.precision")
        if self.device.startswith("cuda") and self.gpus_per_expert == 0:
            # Ray hides every GPU from a task that asks for none.
            raise UserError("device=cuda needs gpus_per_expert > 0 (e.g. 0.25 for four experts per GPU)")
        if self.transition is not None:
            synset_io.read_manifest(self.transition)
        if self.transition_from is not None and self.transition is None:
            raise UserError("transition_from needs transition (the synthetic set the chained experts train on)")


def identity(experts: dict) -> dict:
    """The part of an experts section (``to_dict`` form) that decides what the experts are, for fingerprints.

    An unset step budget and fp32 precision are left out, so runs and buffers recorded before
    they existed still resume.
    """
    kept = {k: v for k, v in experts.items() if k not in NOT_IDENTITY}
    if kept.get("precision") == "fp32":
        del kept["precision"]
    if "recipe" in kept:
        kept["recipe"] = recipe_identity(kept["recipe"])
    return kept


def recipe_identity(recipe: dict) -> dict:
    """A recipe (``to_dict`` form) without the fields that are unset by default and newer than old records."""
    return {k: v for k, v in recipe.items() if not (k == "transition_steps" and v is None)}


def maybe_fail_once(out: str, expert_id: int) -> None:
    """Tests only: with PDD_RAY_FAIL_ONCE_DIR set, raise the first time (out, id) gets here (a marker file remembers)."""
    marker_dir = os.environ.get(FAIL_ONCE_ENV)
    if marker_dir:
        marker = Path(marker_dir) / f"{Path(out).name}_{expert_id}"
        if not marker.exists():
            marker.touch()
            raise RuntimeError(f"injected failure for expert {expert_id}")


def _expert_task(expert_id, config, num_classes, train, test, transition, start, progress, threads):
    """Body of one Ray task (kept module-level so Ray can ship it)."""
    from pdd_ray.precision import resolve_precision
    from pdd_ray.runtime import configure_compute
    from pdd_ray.train.loop import resolve_device

    configure_compute(threads)
    maybe_fail_once(config.out, expert_id)
    device = resolve_device(config.device)
    make_model = model_factory(config.model, tuple(train[0].shape[1:]), num_classes, device)
    result = train_expert(config.seed + expert_id, make_model, train, test, config.recipe,
                          make_augment(config.augment), transition, config.track_forgetting,
                          on_epoch=lambda _: progress.add(1), start=start,
                          precision=resolve_precision(config.precision, device))
    return expert_id, result


def build_buffer(config: ExpertsConfig, progress: bool = True, data=None, synthetic: list | None = None) -> dict:
    """Train the missing experts of ``config.out`` in parallel and return a summary.

    ``data``: the DataBundle of ``config.data`` when the caller already has it (else it is loaded);
    ``synthetic``: the stages of the set ``config.transition`` names, in memory (else read from there).
    Either way nothing is decoded or read twice.

    ``out`` may be a URI (s3://, gs://, hdfs://, file://): the buffer is then
    built in a local mirror that first downloads what the URI already holds
    (so a rerun resumes), and is uploaded after each finished expert and once
    more at the end. The summary's ``out`` is then the local mirror, ``uri`` the URI.
    """
    if is_uri(config.out):
        return _build_at_uri(config, progress, data, synthetic)
    return _build(config, progress, data=data, synthetic=synthetic)


def _build_at_uri(config: ExpertsConfig, progress: bool, data=None, synthetic=None) -> dict:
    """Build in the local mirror of the URI ``config.out``; upload after each expert and at the end."""
    local = prepare_output_dir(config.out)

    def upload_after_expert() -> None:
        try:
            upload_directory(local, config.out)
        except (OSError, UserError) as exc:  # keep training; the final upload below retries and fails loudly
            log.warning("uploading to %s failed (retried later): %s", config.out, exc)

    summary = _build(replace(config, out=str(local)), progress, after_save=upload_after_expert, data=data,
                     synthetic=synthetic)
    upload_directory(local, config.out)  # the manifest of a fresh store, forgetting scores, anything missed
    return {**summary, "uri": config.out}


def _build(config: ExpertsConfig, progress: bool, after_save=None, data=None, synthetic=None) -> dict:
    from pdd_ray.locking import hold_directory

    with hold_directory(config.out, "experts"):  # one builder per buffer
        return _build_locked(config, progress, after_save, data, synthetic)


def _build_locked(config: ExpertsConfig, progress: bool, after_save=None, data=None, synthetic=None) -> dict:
    from pdd_ray.cluster import ray_session
    from pdd_ray.data.bundle import create_dataset

    data = create_dataset(config.data) if data is None else data
    if config.train_positions:
        data = replace(data, train=data.train.subset(read_positions(config.train_positions, len(data.train))))
    stages = None
    if config.transition:
        stages = _stages_on_disk(config.transition, data) if synthetic is None else list(synthetic)
    transition = _transition_union(config.transition, stages, data) if stages is not None else None
    todo = _still_missing(config)
    if not todo:
        store = _create_store(config, data, stages)  # checks the finished buffer is the one asked for
        _aggregate_forgetting(config, store, data)
        return {"out": config.out, "trained": 0, "complete": len(store.completed())}
    with ray_session(config.address):
        check_fits(("cpus_per_expert", config.cpus_per_expert), ("gpus_per_expert", config.gpus_per_expert))
        store = _create_store(config, data, stages)  # only once Ray can run the experts: nothing empty is left
        todo = store.missing(config.num_experts)
        _run_tasks(config, store, data, transition, todo, progress, after_save)
    _aggregate_forgetting(config, store, data)
    return {"out": config.out, "trained": len(todo), "complete": len(store.completed())}


def _still_missing(config: ExpertsConfig) -> list[int]:
    """The experts of ``config.out`` not complete yet, read without writing anything."""
    from pdd_ray.trajectories import TrajectoryStore
    if not (Path(config.out) / "manifest.json").is_file():
        return list(range(config.num_experts))
    with TrajectoryStore.open(config.out) as store:
        return store.missing(config.num_experts)


def _create_store(config: ExpertsConfig, data, stages):
    """The buffer's store, new or reopened (a reopened one must have been built with the same settings)."""
    from pdd_ray.trajectories import TrajectoryStore
    return TrajectoryStore.create(
        config.out, dataset=data.name, preprocessing=data.preprocessor.describe(),
        model={"arch": config.model.arch, **config.model.kwargs(), "image_shape": list(data.image_shape),
               "num_classes": data.num_classes},
        layout=_layout(config, data), recipe=_recipe_record(config, stages),
        num_snapshots=config.recipe.num_snapshots, dtype=config.dtype)


def _run_tasks(config, store, data, transition, todo, show_progress, after_save=None) -> None:
    import ray

    counter = task_counter()
    train_ref = ray.put((data.train.images, data.train.labels))
    test_ref = ray.put((data.test.images, data.test.labels))
    task = ray.remote(_expert_task).options(num_cpus=config.cpus_per_expert, num_gpus=config.gpus_per_expert,
                                            max_retries=config.max_retries,
                                            retry_exceptions=RETRIED)
    threads = max(1, int(config.cpus_per_expert))
    transition_ref = ray.put(transition)  # one copy in the object store, however many experts
    starts = chain_starts(config.transition_from, todo)
    pending = [task.remote(i, config, data.num_classes, train_ref, test_ref, transition_ref, starts.get(i), counter,
                           threads) for i in todo]
    total_epochs = len(todo) * config.recipe.epochs  # real-data epochs; the transition warm-up is not counted
    bar = progress_bar(total=total_epochs, desc=f"experts 0/{len(todo)}", unit="epoch", disable=not show_progress)
    done, failures = 0, []
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        bar.n = min(counter.value(), total_epochs)
        bar.refresh()
        for ref in ready:
            try:
                expert_id, result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                failures.append(str(exc).splitlines()[0])
                continue
            _save_expert(config, store, expert_id, result)
            if after_save is not None:
                after_save()
            done += 1
            bar.set_description(f"experts {done}/{len(todo)}")
    bar.close()
    counter.close()
    if failures:
        raise UserError(f"{len(failures)} expert(s) failed after {config.max_retries} retries "
                        f"(completed ones are saved; rerun to resume): {failures[0]}")


def chain_starts(previous: str | None, expert_ids: list[int]) -> dict[int, torch.Tensor]:
    """Snapshot 0 of each expert of the previous stage's buffer: where the chained expert starts."""
    if previous is None:
        return {}
    from pdd_ray.trajectories import TrajectoryStore
    with TrajectoryStore.open(previous) as store:
        missing = sorted(set(expert_ids) - set(store.completed()))
        if missing:
            raise UserError(f"the transition chain needs expert {missing[0]} of {previous}, which has only "
                            f"{len(store.completed())} finished experts: raise that buffer's num_experts or lower "
                            "experts.num_experts")
        return {i: store.snapshot(i, 0) for i in expert_ids}


def read_positions(path: str, limit: int) -> torch.Tensor:
    """Training-split positions from a safetensors file (``positions``), checked to lie in [0, limit)."""
    from safetensors.torch import load_file
    try:
        positions = load_file(path)["positions"].long()
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"cannot read training positions from {path}: {exc}") from None
    if positions.dim() != 1 or len(positions) == 0 or positions.min() < 0 or positions.max() >= limit:
        raise UserError(f"{path}: positions must be a non-empty 1-d list within the training split (< {limit})")
    return positions


def _save_expert(config, store, expert_id: int, result) -> None:
    if result.forgetting is not None:
        path = Path(config.out) / f"forgetting_{expert_id:05d}.safetensors"
        save_scores(path, result.forgetting, torch.arange(len(result.forgetting)))
    info = {"seed": result.seed, "init": result.init, "test_accuracy": result.test_accuracy, "finished": time.time()}
    if result.transition_seconds is not None:
        info["transition_seconds"] = result.transition_seconds
    store.write_expert(expert_id, result.snapshots, info)


def _aggregate_forgetting(config, store, data) -> None:
    """Average per-expert forgetting counts into one score file keyed by on-disk training index."""
    if not config.track_forgetting:
        return
    from pdd_ray.selection.forgetting import load_scores
    files = [Path(config.out) / f"forgetting_{i:05d}.safetensors" for i in store.completed()]
    scores = [load_scores(f)[0] for f in files if f.is_file()]
    if scores:
        # Mean over experts: a per-training-run count, comparable with the paper's bins of 10 events.
        save_scores(Path(config.out) / "forgetting.safetensors", torch.stack(scores).mean(0), data.train_indices)


def _layout(config, data):
    from pdd_ray.models.functional import ParamLayout
    return ParamLayout.of(model_factory(config.model, data.image_shape, data.num_classes, torch.device("cpu"))())


def _recipe_record(config, stages: list | None = None) -> dict:
    # What must match for a resumed buffer to be one consistent set of experts.
    return {**recipe_identity(to_dict(config.recipe)), "augment": to_dict(config.augment), "seed": config.seed,
            "data": {k: v for k, v in to_dict(config.data).items() if k not in ("root", "download")},
            "transition": _transition_digest(config, stages),
            "transition_from": _buffer_digest(config.transition_from, config.num_experts),
            "train_positions": _file_digest(config.train_positions)}


def _buffer_digest(directory: str | None, num_experts: int) -> str | None:
    """sha256 over the entries of the experts a chain starts from: chained experts are tied to them."""
    if directory is None:
        return None
    import hashlib
    import json
    from pdd_ray.trajectories import TrajectoryStore
    with TrajectoryStore.open(directory) as store:
        used = {k: v for k, v in store.manifest.get("experts", {}).items() if int(k) < num_experts}
        return hashlib.sha256(json.dumps(used, sort_keys=True).encode()).hexdigest()


def _file_digest(path: str | None) -> str | None:
    import hashlib
    return None if path is None else hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _transition_digest(config, stages: list | None) -> str | None:
    """What ties transition experts to their union: the stages' images, labels and the lr they train with."""
    if stages is None:
        return None
    digest = union_digest(stages)
    recorded = recorded_recipe(config.out).get("transition")
    if recorded not in (None, digest) and recorded == _stage_files_digest(config.transition):
        return recorded  # a buffer begun when the digest covered the stage files: the same images, so it resumes
    return digest


def union_digest(stages: list) -> str:
    """sha256 over each stage's images, labels and learned lr (in memory: nothing is read)."""
    import hashlib
    digest = hashlib.sha256()
    for stage in stages:
        digest.update(stage.images.detach().cpu().contiguous().numpy().tobytes())
        digest.update(stage.labels.cpu().contiguous().numpy().tobytes())
        digest.update(repr(stage.lr).encode())
    return digest.hexdigest()


def recorded_recipe(directory: str) -> dict:
    """The recipe record of the buffer in ``directory`` ({} when there is none yet)."""
    import json
    path = Path(directory) / "manifest.json"
    try:
        return json.loads(path.read_text()).get("recipe") or {}
    except (OSError, ValueError):
        return {}  # no store yet, or one TrajectoryStore.create will report


def _stage_files_digest(directory: str) -> str:
    """sha256 over a synthetic set's stage files: how buffers recorded their union before ``union_digest``."""
    import hashlib
    digest = hashlib.sha256()
    for entry in synset_io.read_manifest(directory)["stages"]:
        digest.update((Path(directory) / entry["file"]).read_bytes())
    return digest.hexdigest()


def _transition_union(directory: str, stages: list, data) -> tuple[torch.Tensor, torch.Tensor, float]:
    """U_i (decoded, as a network trains on it) and the lr of its last stage, checked against the dataset."""
    shape = tuple(stages[0].images.shape[1:]) if stages else ()
    if not stages or shape != data.image_shape:
        raise UserError(f"transition set {directory} holds {len(stages)} stage(s) of shape {shape}, "
                        f"not images of {data.name} {data.image_shape}")
    images, labels = synset_io.SyntheticSet(data.name, data.num_classes, data.class_names, data.preprocessor,
                                            stages).union()
    return images, labels, stages[-1].lr or 0.01


def _stages_on_disk(directory: str, data) -> list:
    """The stages of the synthetic set in ``directory`` (the ``pdd-ray experts --transition`` path)."""
    synset = synset_io.load(directory)
    if synset.dataset != data.name:
        raise UserError(f"transition set {directory} is for {synset.dataset}, not {data.name}")
    return synset.stages
